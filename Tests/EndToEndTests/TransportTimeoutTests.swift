import FleetSyncTestSupport
import FleetSyncTransport
import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// A loopback server that answers every connection with a response head and then one body byte
/// every half second: alive as far as a read timeout can tell, but never done.
final class TricklingServer: @unchecked Sendable {
    let port: Int
    private let listener: Int32
    private let thread: Thread

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(fd, 4) == 0 else { throw TestClusterError("cannot listen on loopback") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        port = Int(UInt16(bigEndian: address.sin_port))
        listener = fd
        thread = Thread {
            while true {
                let client = accept(fd, nil, nil)
                guard client >= 0 else { return }
                Thread.detachNewThread {
                    var buffer = [UInt8](repeating: 0, count: 65_536)
                    _ = read(client, &buffer, buffer.count)
                    let head = Array("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n".utf8)
                    guard write(client, head, head.count) == head.count else { close(client); return }
                    for _ in 0..<200 {
                        usleep(500_000)
                        if write(client, [UInt8(0)], 1) != 1 { break }
                    }
                    close(client)
                }
            }
        }
        thread.start()
    }

    func stop() { shutdown(listener, Int32(SHUT_RDWR)); close(listener) }
}

final class TransportTimeoutTests: XCTestCase {
    /// request_timeout_seconds is the deadline of the whole exchange, body included.
    func testTheDeadlineCoversTheResponseBody() async throws {
        let server = try TricklingServer()
        defer { server.stop() }
        let transport = try HTTPExchangeTransport(shoreURL: "http://127.0.0.1:\(server.port)", timeout: .seconds(2))
        let started = Date()
        do {
            _ = try await transport.send([1, 2, 3])
            XCTFail("a trickling answer must not complete")
        } catch {
            XCTAssertTrue("\(error)".contains("did not answer in full within 2 s"), "\(error)")
        }
        let elapsed = Date().timeIntervalSince(started)
        XCTAssertLessThan(elapsed, 8, "the exchange gave up at its deadline, not when the body ended")
        await transport.shutdown()
    }
}
