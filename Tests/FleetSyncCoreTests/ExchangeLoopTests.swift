import XCTest
@testable import FleetSyncCore

final class ExchangeLoopTests: XCTestCase {
    func testExchangesWhilePendingThenSleepsTheInterval() {
        var loop = ExchangeLoop(intervalSeconds: 30)
        XCTAssertEqual(loop.start(), .exchange)
        XCTAssertEqual(loop.succeeded(pending: true), .exchange)
        XCTAssertEqual(loop.succeeded(pending: false), .sleep(seconds: 30))
        XCTAssertEqual(loop.state, .idle)
        XCTAssertEqual(loop.woke(), .exchange)
    }

    func testBackoffDoublesWithJitterUpToTheMaximumAndResetsOnSuccess() {
        var loop = ExchangeLoop(intervalSeconds: 30)
        _ = loop.start()
        var expected = 1.0
        for failure in 1...12 {
            guard case .sleep(let low) = loop.failed(jitter: 0) else { return XCTFail("must sleep") }
            XCTAssertEqual(low, expected * 0.5, accuracy: 1e-9, "failure \(failure)")
            XCTAssertEqual(loop.state, .backingOff(failures: failure))
            XCTAssertEqual(loop.woke(), .exchange)
            expected = min(expected * 2, 300)
        }
        guard case .sleep(let high) = loop.failed(jitter: 0.999) else { return XCTFail("must sleep") }
        XCTAssertLessThan(high, 300 * 1.5)
        XCTAssertEqual(loop.succeeded(pending: false), .sleep(seconds: 30))
        guard case .sleep(let fresh) = loop.failed(jitter: 0.5) else { return XCTFail("must sleep") }
        XCTAssertEqual(fresh, 1, "backoff starts over after a success")
    }

    func testStopWinsOverEverything() {
        var loop = ExchangeLoop(intervalSeconds: 30)
        _ = loop.start()
        XCTAssertEqual(loop.stop(), .stop)
        XCTAssertEqual(loop.succeeded(pending: true), .stop)
        XCTAssertEqual(loop.failed(jitter: 0.1), .stop)
        XCTAssertEqual(loop.woke(), .stop)
    }
}
