import Foundation

// MARK: - The small part of HTTP/1.1 an MJPEG client needs
//
// IP cameras and mjpg-streamer answer one GET with `multipart/x-mixed-replace` and never end the body.
// The parts are JPEGs, so the body goes through `MJPEGSplitter`, which finds each image by its markers:
// part boundaries and headers are bytes between images, and cameras that get the boundary string or a
// part's Content-Length wrong are read all the same. Bodies may be sent chunked (ffmpeg's server does).

/// An `http://[user:password@]host[:port][/path][?query]` URL.
public struct HTTPURL: Sendable, Equatable, CustomStringConvertible {
    public let host: String
    public let port: Int
    /// Path and query, as sent in the request line.
    public let target: String
    /// `Basic ...` when the URL carries a user name.
    public let authorization: String?
    /// The URL with any password masked, for messages.
    public let description: String

    public init(parsing text: String) throws {
        func fail(_ reason: String) -> FrameSourceError { FrameSourceError("\(text): \(reason)") }
        guard text.lowercased().hasPrefix("http://") else { throw fail("not an http:// URL") }
        guard !text.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value == 0x7F }) else {
            throw fail("the URL contains spaces or control characters; percent-encode them (a space is %20)")
        }
        var rest = Substring(text.dropFirst("http://".count))
        if let hash = rest.firstIndex(of: "#") { rest = rest[..<hash] }
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        var authority = rest[..<authorityEnd]
        let pathAndQuery = rest[authorityEnd...]
        target = pathAndQuery.isEmpty ? "/" : (pathAndQuery.first == "?" ? "/" + pathAndQuery : String(pathAndQuery))

        var masked = ""
        if let at = authority.lastIndex(of: "@") {
            let userInfo = authority[..<at]
            authority = authority[authority.index(after: at)...]
            let parts = userInfo.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            guard let user = parts[0].removingPercentEncoding,
                  let password = (parts.count > 1 ? parts[1] : "").removingPercentEncoding
            else { throw fail("the user name or password has a bad percent-encoding") }
            authorization = "Basic " + Data("\(user):\(password)".utf8).base64EncodedString()
            masked = parts.count > 1 ? "\(parts[0]):***@" : "\(parts[0])@"
        } else {
            authorization = nil
        }

        var portText: Substring?
        if authority.first == "[" {
            guard let close = authority.firstIndex(of: "]") else { throw fail("an IPv6 address must end with ]") }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.first == ":" else { throw fail("expected :port after the IPv6 address") }
                portText = after.dropFirst()
            }
            guard !host.isEmpty, host.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else {
                throw fail("\(host) is not an IPv6 address")
            }
        } else {
            if let colon = authority.firstIndex(of: ":") {
                host = String(authority[..<colon])
                portText = authority[authority.index(after: colon)...]
            } else {
                host = String(authority)
            }
            guard !host.isEmpty else { throw fail("no host name") }
            guard host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "_") }) else {
                throw fail("\(host) is not a host name")
            }
        }
        if let portText {
            guard !portText.isEmpty, portText.allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int(portText), (1...65535).contains(value) else {
                throw fail("the port must be a number from 1 to 65535")
            }
            port = value
        } else {
            port = 80
        }
        description = "http://" + masked + authority + pathAndQuery
    }

    /// The GET request for this URL.
    public var request: [UInt8] {
        let hostHeader = (host.contains(":") ? "[\(host)]" : host) + (port == 80 ? "" : ":\(port)")
        var lines = [
            "GET \(target) HTTP/1.1",
            "Host: \(hostHeader)",
            "User-Agent: blip2-watch",
            "Accept: multipart/x-mixed-replace, image/jpeg, */*",
            "Connection: close",
        ]
        if let authorization { lines.append("Authorization: \(authorization)") }
        return Array((lines.joined(separator: "\r\n") + "\r\n\r\n").utf8)
    }
}

/// The status line and the headers of a response.
public struct HTTPResponseHead: Sendable, Equatable {
    public let status: Int
    public let reason: String
    /// Header names lowercased; a repeated header keeps its last value.
    public let headers: [String: String]

    public static let maxBytes = 16 << 10

    /// Where the head ends (just past the empty line), if it has arrived.
    public static func end(in bytes: [UInt8]) -> Int? {
        var i = 0
        while i + 1 < bytes.count {
            if bytes[i] == 0x0A {
                if bytes[i + 1] == 0x0A { return i + 2 }
                if bytes[i + 1] == 0x0D, i + 2 < bytes.count, bytes[i + 2] == 0x0A { return i + 3 }
            }
            i += 1
        }
        return nil
    }

    /// Parses the head (status line and header lines; CRLF or bare LF line ends).
    public init(parsing bytes: [UInt8]) throws {
        // Split as bytes: in a Swift string "\r\n" is one character, and a bare "\n" another.
        var lines = bytes.split(separator: 0x0A, omittingEmptySubsequences: false).map { line in
            String(decoding: line.last == 0x0D ? line.dropLast() : line, as: UTF8.self)
        }
        while lines.last?.isEmpty == true { lines.removeLast() }
        guard let statusLine = lines.first else { throw FrameSourceError("an empty response") }
        let fields = statusLine.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
        guard fields.count >= 2, fields[0].hasPrefix("HTTP/1."), fields[1].count == 3, let status = Int(fields[1]), status >= 100
        else { throw FrameSourceError("not an HTTP/1.x response (\"\(statusLine.prefix(60))\")") }
        self.status = status
        reason = fields.count > 2 ? String(fields[2]) : ""
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":"), colon != line.startIndex else {
                throw FrameSourceError("a malformed header line (\"\(line.prefix(60))\")")
            }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        self.headers = headers
    }

    public var isChunked: Bool {
        headers["transfer-encoding"]?.lowercased().split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces) == "chunked" } ?? false
    }
}

/// Undoes `Transfer-Encoding: chunked` as the bytes arrive, however they are cut.
public struct ChunkedDecoder: Sendable {
    private enum State: Sendable {
        case size(value: Int, digits: Int)
        case sizeExtension(value: Int)
        case sizeLineFeed(value: Int)
        case data(remaining: Int)
        case dataCarriageReturn
        case dataLineFeed
        case trailer(lineIsEmpty: Bool)
        case done
    }

    private var state = State.size(value: 0, digits: 0)
    /// Chunk sizes beyond 8 hex digits are refused.
    private static let maxSizeDigits = 8

    public init() {}

    /// The last chunk and its trailer have arrived.
    public var isDone: Bool {
        if case .done = state { return true }
        return false
    }

    /// Passes the body bytes in `chunk` to `body`; throws on a malformed encoding.
    public mutating func push(_ chunk: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> Void) throws {
        var i = 0
        let count = chunk.count
        while i < count {
            let byte = chunk[i]
            switch state {
            case .size(let value, let digits):
                if let digit = Self.hexValue(byte) {
                    guard digits < Self.maxSizeDigits else { throw FrameSourceError("a chunk size longer than \(Self.maxSizeDigits) hex digits") }
                    state = .size(value: value << 4 | digit, digits: digits + 1)
                } else if digits == 0 {
                    throw FrameSourceError(String(format: "a chunk size that is not hexadecimal (byte 0x%02X)", byte))
                } else if byte == 0x3B || byte == 0x20 || byte == 0x09 {
                    state = .sizeExtension(value: value)
                } else if byte == 0x0D {
                    state = .sizeLineFeed(value: value)
                } else if byte == 0x0A {
                    endSizeLine(value)
                } else {
                    throw FrameSourceError(String(format: "a malformed chunk size line (byte 0x%02X)", byte))
                }
                i += 1
            case .sizeExtension(let value):
                if byte == 0x0A { endSizeLine(value) }
                i += 1
            case .sizeLineFeed(let value):
                guard byte == 0x0A else { throw FrameSourceError("a chunk size line without its line feed") }
                endSizeLine(value)
                i += 1
            case .data(let remaining):
                let step = min(remaining, count - i)
                body(UnsafeRawBufferPointer(rebasing: chunk[i..<(i + step)]))
                i += step
                state = step == remaining ? .dataCarriageReturn : .data(remaining: remaining - step)
            case .dataCarriageReturn:
                if byte == 0x0D {
                    state = .dataLineFeed
                } else if byte == 0x0A {
                    state = .size(value: 0, digits: 0)
                } else {
                    throw FrameSourceError("a chunk longer than its size says")
                }
                i += 1
            case .dataLineFeed:
                guard byte == 0x0A else { throw FrameSourceError("a chunk longer than its size says") }
                state = .size(value: 0, digits: 0)
                i += 1
            case .trailer(let lineIsEmpty):
                if byte == 0x0A {
                    state = lineIsEmpty ? .done : .trailer(lineIsEmpty: true)
                } else if byte != 0x0D {
                    state = .trailer(lineIsEmpty: false)
                }
                i += 1
            case .done:
                return
            }
        }
    }

    private mutating func endSizeLine(_ value: Int) {
        state = value == 0 ? .trailer(lineIsEmpty: true) : .data(remaining: value)
    }

    private static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case 0x30...0x39: return Int(byte - 0x30)
        case 0x41...0x46: return Int(byte - 0x41 + 10)
        case 0x61...0x66: return Int(byte - 0x61 + 10)
        default: return nil
        }
    }
}
