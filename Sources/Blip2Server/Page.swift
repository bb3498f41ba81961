import Hummingbird

enum Page {
    static func response() -> Response {
        Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-cache"],
                 body: .init(byteBuffer: ByteBuffer(string: html)))
    }
    static let html = "<!doctype html><title>blip2</title>"
}
