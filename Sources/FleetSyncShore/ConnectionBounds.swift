import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

/// Hummingbird's HTTP/1.1 channel with the bounds it does not keep itself (issue 16): a client
/// must deliver a request's whole body within `bodySeconds` of its head (a body trickled a byte
/// at a time is never idle, so the idle timeout alone never ends it; a trickled head is, since
/// the idle timeout counts whole request parts); a client must take each slice of its answer
/// within `answerSeconds` (``StalledReaderGuard``); and an HTTP/1.0 connection without
/// `Connection: keep-alive` is closed after its answer, as HTTP/1.0 says.
struct BoundedHTTP1Channel: ServerChildChannel, HTTPChannelHandler {
    typealias Value = HTTP1Channel.Value
    let inner: HTTP1Channel
    let bodySeconds: Int64
    let answerSeconds: Int64

    var responder: HTTPChannelHandler.Responder { inner.responder }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let bodySeconds = bodySeconds, answerSeconds = answerSeconds
        return inner.setup(channel: channel, logger: logger).flatMapThrowing { value in
            // Between NIO's HTTP/1 decoder (which knows the version) and the conversion to
            // version-less HTTP types.
            let codec = try channel.pipeline.syncOperations.handler(type: HTTP1ToHTTPServerCodec.self)
            try channel.pipeline.syncOperations.addHandler(BodyDeadline(seconds: bodySeconds), position: .before(codec))
            // Next to the socket, where the answer is bytes.
            try channel.pipeline.syncOperations.addHandler(StalledReaderGuard(seconds: answerSeconds), position: .first)
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }
}

/// Closes a connection whose request body does not arrive within `seconds` of its head, and
/// marks an HTTP/1.0 request without keep-alive `Connection: close` (Hummingbird then closes
/// the connection once it has answered).
final class BodyDeadline: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    private let seconds: Int64
    private var timer: Scheduled<Void>?

    init(seconds: Int64) { self.seconds = seconds }

    func handlerRemoved(context: ChannelHandlerContext) { disarm() }

    func channelInactive(context: ChannelHandlerContext) {
        disarm()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var part = unwrapInboundIn(data)
        switch part {
        case .head(var head):
            disarm()
            let channel = context.channel
            timer = context.eventLoop.scheduleTask(in: .seconds(seconds)) { channel.close(promise: nil) }
            if head.version == .http1_0 && !head.isKeepAlive {
                head.headers.replaceOrAdd(name: "connection", value: "close")
                part = .head(head)
            }
        case .body:
            break
        case .end:
            disarm()
        }
        context.fireChannelRead(wrapInboundOut(part))
    }

    private func disarm() {
        timer?.cancel()
        timer = nil
    }
}

/// Closes a connection whose client stops reading its answer (issue 19, bad input): once an
/// answer is handed to Hummingbird the exchange's gate place and database connection are free,
/// but the answer's buffer and the connection's task stay until the client has taken it, and a
/// client that keeps its connection open and reads nothing (a zero window) would hold them for
/// ever, since the idle timeout does not run while an answer is being written. Sits next to the
/// socket: each write is cut into slices of `sliceBytes`, and when no slice is taken by the
/// kernel for `seconds` while some wait (the client took less than a slice in that time) the
/// connection is closed, which fails the writes and frees the buffer. Slow but moving readers
/// are not cut off: every slice taken restarts the clock.
final class StalledReaderGuard: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    static let sliceBytes = 16 * 1024

    private let seconds: Int64
    /// Slices written and not yet taken by the kernel.
    private var waiting = 0
    private var timer: Scheduled<Void>?
    private var removed = false

    init(seconds: Int64) { self.seconds = seconds }

    func handlerRemoved(context: ChannelHandlerContext) {
        removed = true
        disarm()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .byteBuffer(var buffer) = unwrapOutboundIn(data), buffer.readableBytes > Self.sliceBytes else {
            context.write(data, promise: tracked(promise, context: context))
            return
        }
        while buffer.readableBytes > Self.sliceBytes, let slice = buffer.readSlice(length: Self.sliceBytes) {
            context.write(wrapOutboundOut(.byteBuffer(slice)), promise: tracked(nil, context: context))
        }
        context.write(wrapOutboundOut(.byteBuffer(buffer)), promise: tracked(promise, context: context))
    }

    /// A promise of the slice's own that counts it while it waits and then completes the
    /// caller's `promise`, if any.
    private func tracked(_ promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) -> EventLoopPromise<Void> {
        let own = context.eventLoop.makePromise(of: Void.self)
        if waiting == 0 { arm(context) }
        waiting += 1
        own.futureResult.assumeIsolated().whenComplete { result in
            self.waiting -= 1
            self.disarm()
            // A failed write means the connection is closing: nothing left to watch.
            if self.waiting > 0, case .success = result { self.arm(context) }
            promise?.completeWith(result)
        }
        return own
    }

    private func arm(_ context: ChannelHandlerContext) {
        guard !removed else { return }
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: .seconds(seconds)) { channel.close(promise: nil) }
    }

    private func disarm() {
        timer?.cancel()
        timer = nil
    }
}
