import CPage
import Foundation
import Hummingbird

// MARK: - The kiosk page
//
// One self-contained document (no CDN, no framework, no web fonts): it must work with the network
// unplugged. Its HTML, CSS and JavaScript are files of their own (Sources/CPage/page), compiled into the
// binary, and joined here into the one document served; it is the only page the server serves, so no
// request path can reach the file system.

enum Page {
    static func response() -> Response {
        Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-cache"],
                 body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    /// index.html with its stylesheet and script inlined where it links them.
    static let html: String = {
        func text(_ file: blip2_page_file) -> String {
            String(decoding: UnsafeBufferPointer(start: file.bytes, count: file.size), as: UTF8.self)
        }
        let document = text(blip2_page_html())
        let style = text(blip2_page_css())
        let script = text(blip2_page_js())
        let stylesheetLink = #"<link rel="stylesheet" href="page.css">"#
        let scriptLink = #"<script src="page.js"></script>"#
        precondition(document.contains(stylesheetLink) && document.contains(scriptLink), "index.html must link page.css and page.js")
        return document
            .replacingOccurrences(of: stylesheetLink, with: "<style>\n\(style)</style>")
            .replacingOccurrences(of: scriptLink, with: "<script>\n\(script)</script>")
    }()
}
