@testable import FleetSyncShore
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import XCTest

/// Issue 19, bad input: a client that stops reading its answer. The shore's HTTP connections
/// carry ``StalledReaderGuard`` next to the socket; these tests put it on a plain loopback
/// connection with small socket buffers, so that an answer of a few MiB cannot hide in them.
final class StalledReaderTests: XCTestCase {
    static let answerBytes = 4 * 1024 * 1024

    /// Writes `answerBytes` to every accepted connection and records, per connection, whether
    /// the write finished and when the connection closed.
    final class Answerer: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        struct Outcome { var written: Bool?; var closedAt: Date? }
        let outcome = NIOLockedValueBox(Outcome())

        func channelActive(context: ChannelHandlerContext) {
            let buffer = context.channel.allocator.buffer(repeating: 0x61, count: StalledReaderTests.answerBytes)
            let outcome = self.outcome
            context.writeAndFlush(NIOAny(IOData.byteBuffer(buffer))).whenComplete { result in
                outcome.withLockedValue { if case .success = result { $0.written = true } else { $0.written = false } }
            }
            context.channel.closeFuture.whenComplete { _ in outcome.withLockedValue { $0.closedAt = Date() } }
            context.fireChannelActive()
        }
    }

    /// Reads (autoRead off) only when `pace` says so, counting the bytes.
    final class Reader: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let received = NIOLockedValueBox(0)
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = unwrapInboundIn(data).readableBytes
            received.withLockedValue { $0 += bytes }
        }
    }

    func serve(guardSeconds: Int64?, answerer: Answerer) async throws -> Channel {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelOption(.socketOption(.so_sndbuf), value: 16 * 1024)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let seconds = guardSeconds {
                        try channel.pipeline.syncOperations.addHandler(StalledReaderGuard(seconds: seconds))
                    }
                    try channel.pipeline.syncOperations.addHandler(answerer)
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    func connect(to server: Channel, reader: Reader) async throws -> Channel {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.autoRead, value: false)
            .channelOption(.socketOption(.so_rcvbuf), value: 16 * 1024)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 16 * 1024))
            .channelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(reader) } }
            .connect(to: server.localAddress!).get()
    }

    /// A client that reads nothing: with the guard, the server closes the connection about a
    /// second after the kernel stopped taking the answer, and the write fails (the buffer is
    /// freed); without it the write is still pending 4 s later.
    func testAClientThatReadsNothingIsClosedAndItsAnswerFreed() async throws {
        for guarded in [true, false] {
            let answerer = Answerer()
            let server = try await serve(guardSeconds: guarded ? 1 : nil, answerer: answerer)
            let client = try await connect(to: server, reader: Reader())
            let started = Date()
            try await Task.sleep(for: .seconds(4))
            let outcome = answerer.outcome.withLockedValue { $0 }
            if guarded {
                XCTAssertEqual(outcome.written, false, "the answer's write failed when the connection was closed")
                let closed = try XCTUnwrap(outcome.closedAt, "the server closed the connection of a client that reads nothing")
                XCTAssertLessThan(closed.timeIntervalSince(started), 3, "closed about 1 s after the answer stalled")
            } else {
                XCTAssertNil(outcome.written, "without the guard the write is still waiting for the client")
                XCTAssertNil(outcome.closedAt)
            }
            try? await client.close()
            try? await server.close()
        }
    }

    /// A client that reads slowly but steadily (16 KiB every 20 ms, far slower than the
    /// connection) gets the whole answer: every slice taken restarts the guard's clock.
    func testASlowButSteadyReaderGetsTheWholeAnswer() async throws {
        let answerer = Answerer()
        let server = try await serve(guardSeconds: 1, answerer: answerer)
        let reader = Reader()
        let client = try await connect(to: server, reader: reader)
        let deadline = Date().addingTimeInterval(30)
        while reader.received.withLockedValue({ $0 }) < Self.answerBytes, client.isActive, Date() < deadline {
            client.read()
            try await Task.sleep(for: .milliseconds(20))
        }
        XCTAssertEqual(reader.received.withLockedValue { $0 }, Self.answerBytes, "the whole answer arrived")
        try await Task.sleep(for: .milliseconds(200))
        XCTAssertEqual(answerer.outcome.withLockedValue { $0.written }, true)
        XCTAssertNil(answerer.outcome.withLockedValue { $0.closedAt }, "the guard did not close a reader that kept reading")
        try? await client.close()
        try? await server.close()
    }
}
