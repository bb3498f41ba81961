import HTTPTypes
import NIOCore
import NIOHTTPTypes

// MARK: - Expect: 100-continue
//
// curl, and most clients uploading more than about 1 MB, send the request head with `Expect: 100-continue`
// and wait for "100 Continue" (curl up to one second) before the body. Unanswered, every large upload paid
// that wait. The server says continue only when it would read the body: the route takes one and the model
// queue has room. Otherwise it stays silent, the route answers at once (a 503 for a full queue), and the
// client never sends what nobody would read.

final class ExpectContinueHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundOut = HTTPResponsePart

    /// Whether a request with this head would have its body read now.
    let admits: @Sendable (HTTPRequest) -> Bool

    init(admits: @escaping @Sendable (HTTPRequest) -> Bool) {
        self.admits = admits
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let request) = unwrapInboundIn(data),
           request.headerFields[.expect]?.lowercased() == "100-continue", admits(request) {
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponse(status: .continue))), promise: nil)
        }
        context.fireChannelRead(data)
    }
}

extension ExpectContinueHandler {
    /// The server's rule: a POST (every route with a body is one) within the body limit, while the model
    /// queue has room.
    static func admits(worker: ModelWorker, maxBodyBytes: Int) -> @Sendable (HTTPRequest) -> Bool {
        { request in
            guard request.method == .post else { return false }
            if let length = request.headerFields[.contentLength].flatMap(Int.init), length > maxBodyBytes { return false }
            return (try? worker.checkRoom()) != nil
        }
    }
}
