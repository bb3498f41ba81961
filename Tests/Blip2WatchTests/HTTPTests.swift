import Foundation
import Testing
@testable import Blip2Watch

@Suite struct HTTPURLTests {
    @Test func parsesWhatCamerasUse() throws {
        // (URL, host, port, request target, Authorization, how messages show it); base64 from coreutils.
        let cases: [(String, String, Int, String, String?, String)] = [
            ("http://camera.local:8080/?action=stream", "camera.local", 8080, "/?action=stream", nil, "http://camera.local:8080/?action=stream"),
            ("http://192.168.1.20/mjpg/video.mjpg", "192.168.1.20", 80, "/mjpg/video.mjpg", nil, "http://192.168.1.20/mjpg/video.mjpg"),
            ("HTTP://Cam", "Cam", 80, "/", nil, "http://Cam"),
            ("http://cam?x=1#frag", "cam", 80, "/?x=1", nil, "http://cam?x=1"),
            ("http://user:p%40ss@cam:81/v", "cam", 81, "/v", "Basic dXNlcjpwQHNz", "http://user:***@cam:81/v"),
            ("http://admin@cam/v", "cam", 80, "/v", "Basic YWRtaW46", "http://admin@cam/v"),
            ("http://[::1]:8090/stream", "::1", 8090, "/stream", nil, "http://[::1]:8090/stream"),
        ]
        for (text, host, port, target, authorization, description) in cases {
            let url = try HTTPURL(parsing: text)
            #expect(url.host == host, "\(text)")
            #expect(url.port == port, "\(text)")
            #expect(url.target == target, "\(text)")
            #expect(url.authorization == authorization, "\(text)")
            #expect(url.description == description, "\(text)")
        }
    }

    @Test func theRequestIsAPlainGET() throws {
        let request = String(decoding: try HTTPURL(parsing: "http://cam:@[::1]:81/a?b").request, as: UTF8.self)
        #expect(request.hasPrefix("GET /a?b HTTP/1.1\r\nHost: [::1]:81\r\n"))
        #expect(request.contains("\r\nAuthorization: Basic Y2FtOg==\r\n"))
        #expect(request.hasSuffix("\r\n\r\n"))
    }

    @Test func refusesWhatIsNotAUsableURL() {
        for text in ["http://", "http://:80/", "http://cam:0/", "http://cam:65536/", "http://cam:8o/", "http://cam:/",
                     "http://ca m/", "http://cam/a b", "http://cam/\r\nX: y", "http://[::1/", "http://[zz]/", "http://cam:+80/",
                     "http://c%41m/", "ftp://cam/"] {
            #expect(throws: FrameSourceError.self, "\(text)") { try HTTPURL(parsing: text) }
        }
    }
}

@Suite struct HTTPResponseTests {
    @Test func readsTheStatusAndHeaders() throws {
        let text = "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=ffmpeg\r\nTransfer-Encoding: gzip, chunked\r\nX-Empty:\r\n\r\n"
        let bytes = Array(text.utf8) + [0xFF, 0xD8]
        let end = try #require(HTTPResponseHead.end(in: bytes))
        #expect(end == text.utf8.count)
        let head = try HTTPResponseHead(parsing: Array(bytes[..<end]))
        #expect(head.status == 200)
        #expect(head.reason == "OK")
        #expect(head.headers["content-type"] == "multipart/x-mixed-replace;boundary=ffmpeg")
        #expect(head.headers["x-empty"] == "")
        #expect(head.isChunked)

        let bare = Array("HTTP/1.0 404 Not Found\nServer: cam\n\n".utf8)
        #expect(HTTPResponseHead.end(in: bare) == bare.count)
        let notFound = try HTTPResponseHead(parsing: bare)
        #expect(notFound.status == 404 && notFound.reason == "Not Found" && !notFound.isChunked)
        #expect(HTTPResponseHead.end(in: Array("HTTP/1.1 200 OK\r\nA: b\r\n".utf8)) == nil)
    }

    @Test func refusesWhatIsNotHTTP() {
        for text in ["RTSP/1.0 200 OK\r\n\r\n", "HTTP/1.1 2000 OK\r\n\r\n", "HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
                     "HTTP/1.1 200 OK\r\n: value\r\n\r\n", ""] {
            #expect(throws: FrameSourceError.self, "\(text)") { try HTTPResponseHead(parsing: Array(text.utf8)) }
        }
    }
}

@Suite struct ChunkedDecoderTests {
    static func decode(_ text: String, cut: Int) throws -> (body: String, done: Bool) {
        var decoder = ChunkedDecoder()
        var body: [UInt8] = []
        let bytes = Array(text.utf8)
        var start = 0
        while start < bytes.count {
            let end = min(bytes.count, start + cut)
            try Array(bytes[start..<end]).withUnsafeBytes { try decoder.push($0) { body += $0 } }
            start = end
        }
        return (String(decoding: body, as: UTF8.self), decoder.isDone)
    }

    @Test func decodesTheRFC9112Example() throws {
        // RFC 9112 section 7.1 shape: sizes in hex, an extension, an empty last chunk and a trailer field.
        let encoded = "4\r\nWiki\r\n5;name=value\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\nignored"
        for cut in [1, 2, 3, 5, 8, 100] {
            let (body, done) = try Self.decode(encoded, cut: cut)
            #expect(body == "Wikipedia in\r\n\r\nchunks.", "cut \(cut)")
            #expect(done)
        }
        let (partial, done) = try Self.decode("1A\r\nabcdefghijklmnopqrstuvwxyz\r\n", cut: 4)
        #expect(partial == "abcdefghijklmnopqrstuvwxyz" && !done)
    }

    @Test func refusesMalformedChunks() {
        for text in ["x\r\n", "\r\n", "4\r\nWikiX\r\n", "4\rWiki", "123456789\r\n", "4 junk\r\nWiki\r\r"] {
            #expect(throws: FrameSourceError.self, "\(text.debugDescription)") { try Self.decode(text, cut: 3) }
        }
    }
}
