import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

/// Hummingbird's HTTP/1.1 channel with the bounds it does not keep itself (issue 16): a client
/// must deliver a request's whole body within `bodySeconds` of its head (a body trickled a byte
/// at a time is never idle, so the idle timeout alone never ends it; a trickled head is, since
/// the idle timeout counts whole request parts); and an HTTP/1.0 connection without
/// `Connection: keep-alive` is closed after its answer, as HTTP/1.0 says.
struct BoundedHTTP1Channel: ServerChildChannel, HTTPChannelHandler {
    typealias Value = HTTP1Channel.Value
    let inner: HTTP1Channel
    let bodySeconds: Int64

    var responder: HTTPChannelHandler.Responder { inner.responder }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let bodySeconds = bodySeconds
        return inner.setup(channel: channel, logger: logger).flatMapThrowing { value in
            // Between NIO's HTTP/1 decoder (which knows the version) and the conversion to
            // version-less HTTP types.
            let codec = try channel.pipeline.syncOperations.handler(type: HTTP1ToHTTPServerCodec.self)
            try channel.pipeline.syncOperations.addHandler(BodyDeadline(seconds: bodySeconds), position: .before(codec))
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
