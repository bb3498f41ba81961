import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An MJPEG stream served over HTTP (`multipart/x-mixed-replace`, or a bare JPEG stream). A dropped
/// connection, a server that stops sending, or a refused connection is retried after a delay that doubles
/// up to a limit and starts again once frames flow; each is reported. An answer that will not change by
/// retrying (404, a login required, a web page instead of a stream) ends the source with an error.
public struct HTTPSource: FrameSource {
    public struct Reconnect: Sendable, Equatable {
        /// The first wait after a failure; doubled after each failure in a row.
        public var initialDelay: Double = 0.5
        public var maxDelay: Double = 30
        public var connectTimeout: Double = 5
        /// A connection that delivers nothing for this long is dropped and reopened.
        public var stallTimeout: Double = 10
        public init() {}
    }

    public let url: HTTPURL
    public let limits: FrameLimits
    public var reconnect = Reconnect()
    public var name: String { url.description }

    public init(url: HTTPURL, limits: FrameLimits = FrameLimits()) {
        self.url = url
        self.limits = limits
    }

    public func run(into sink: FrameSink) throws {
        var delay = reconnect.initialDelay
        var connectedBefore = false
        var splitter = MJPEGSplitter(maxFrameBytes: limits.maxFrameBytes)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: readChunkBytes, alignment: 16)
        defer { buffer.deallocate() }
        while !sink.isCancelled {
            var delivered = false
            let reason: String
            do {
                try stream(into: sink, splitter: &splitter, buffer: buffer, connectedBefore: &connectedBefore, delivered: &delivered)
                reason = "the server ended the stream"
            } catch let failure as Transient {
                reason = failure.message
            }
            if sink.isCancelled { return }
            if let last = splitter.finish() { forward(last, to: sink) }
            if delivered { delay = reconnect.initialDelay }
            sink.notice("\(url): \(reason); reconnecting in \(String(format: "%.1f", delay)) s")
            let resume = Date().addingTimeInterval(delay)
            while !sink.isCancelled, Date() < resume { usleep(UInt32(cancelCheckMilliseconds) * 1000) }
            delay = min(delay * 2, reconnect.maxDelay)
        }
    }

    /// A failure that retrying may cure.
    struct Transient: Error {
        let message: String
        init(_ message: String) { self.message = message }
    }

    /// One connection: request, head, body until it ends. Throws `Transient` or, for answers that
    /// retrying will not change, `FrameSourceError`.
    private func stream(into sink: FrameSink, splitter: inout MJPEGSplitter, buffer: UnsafeMutableRawBufferPointer,
                        connectedBefore: inout Bool, delivered: inout Bool) throws {
        let connection = try TCPConnection(host: url.host, port: url.port, timeout: reconnect.connectTimeout, sink: sink)
        try connection.send(url.request)
        var head: [UInt8] = []
        var headEnd: Int?
        while headEnd == nil {
            let count = try connection.receive(into: buffer, stallTimeout: reconnect.stallTimeout, sink: sink)
            if count == 0 { throw Transient(sink.isCancelled ? "stopped" : "the server closed the connection without answering") }
            head += UnsafeRawBufferPointer(rebasing: buffer[0..<count])
            headEnd = HTTPResponseHead.end(in: head)
            if headEnd == nil, head.count > HTTPResponseHead.maxBytes {
                throw FrameSourceError("\(url): the response headers pass \(HTTPResponseHead.maxBytes) bytes; is this an HTTP camera?")
            }
        }
        let response: HTTPResponseHead
        do { response = try HTTPResponseHead(parsing: Array(head[..<headEnd!])) } catch {
            throw FrameSourceError("\(url): \(error); is this an HTTP camera?")
        }
        try check(response)
        let contentType = response.headers["content-type"] ?? "no content type"
        sink.notice(connectedBefore ? "reconnected to \(url)" : "connected to \(url) (\(contentType))")
        connectedBefore = true

        var chunked = response.isChunked ? ChunkedDecoder() : nil
        func split(_ body: UnsafeRawBufferPointer) {
            splitter.push(body) { event in
                if case .frame = event { delivered = true }
                forward(event, to: sink)
            }
        }
        func feed(_ bytes: UnsafeRawBufferPointer) throws {
            if chunked != nil {
                do { try chunked!.push(bytes, split) } catch { throw Transient("a malformed chunked body (\(error))") }
            } else {
                split(bytes)
            }
        }
        try head[headEnd!...].withUnsafeBytes { try feed($0) }
        while !sink.isCancelled, chunked?.isDone != true {
            let count = try connection.receive(into: buffer, stallTimeout: reconnect.stallTimeout, sink: sink)
            if count == 0 { return }
            try feed(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
        }
    }

    private func check(_ response: HTTPResponseHead) throws {
        let answer = "\(response.status) \(response.reason)".trimmingCharacters(in: .whitespaces)
        switch response.status {
        case 200:
            let type = response.headers["content-type"]?.lowercased() ?? ""
            if type.hasPrefix("text/") || type.hasPrefix("application/json") || type.hasPrefix("application/xml") {
                throw FrameSourceError("\(url): the server sent \(type), not an MJPEG stream (multipart/x-mixed-replace); check the URL (cameras often serve the stream at a path like /video or /mjpg/video.mjpg)")
            }
        case 401:
            throw FrameSourceError("\(url): the server answered \(answer): give a user name and password in the URL (http://user:password@host/...)")
        case 300..<400:
            let location = response.headers["location"].map { " to \($0)" } ?? ""
            throw FrameSourceError("\(url): the server answered \(answer) (redirect\(location)); give the final URL")
        case 500..<600:
            throw Transient("the server answered \(answer)")
        default:
            throw FrameSourceError("\(url): the server answered \(answer); check the URL")
        }
    }
}

// MARK: - A TCP connection with timeouts that notice cancellation

final class TCPConnection {
    private let fd: Int32

    init(host: String, port: Int, timeout: Double, sink: FrameSink) throws {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Glibc)
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #else
        hints.ai_socktype = SOCK_STREAM
        #endif
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0 else { throw HTTPSource.Transient("cannot resolve \(host) (\(String(cString: gai_strerror(status))))") }
        defer { freeaddrinfo(list) }
        var failure = "no address"
        var entry = list
        while let address = entry?.pointee {
            entry = address.ai_next
            let fd = socket(address.ai_family, address.ai_socktype, address.ai_protocol)
            guard fd >= 0 else {
                failure = String(cString: strerror(errno))
                continue
            }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            if let error = Self.connect(fd, address, timeout: timeout, sink: sink) {
                failure = error
                close(fd)
                continue
            }
            self.fd = fd
            return
        }
        throw HTTPSource.Transient("cannot connect to \(host):\(port) (\(failure))")
    }

    deinit { close(fd) }

    /// Connects a non-blocking socket; returns why it failed, or nil.
    private static func connect(_ fd: Int32, _ address: addrinfo, timeout: Double, sink: FrameSink) -> String? {
        #if canImport(Glibc)
        let started = Glibc.connect(fd, address.ai_addr, address.ai_addrlen)
        #else
        let started = Darwin.connect(fd, address.ai_addr, address.ai_addrlen)
        #endif
        if started == 0 { return nil }
        guard errno == EINPROGRESS else { return String(cString: strerror(errno)) }
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if sink.isCancelled { return "stopped" }
            var descriptor = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            let ready = poll(&descriptor, 1, cancelCheckMilliseconds)
            if ready < 0, errno != EINTR { return String(cString: strerror(errno)) }
            guard ready > 0 else { continue }
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 else { return String(cString: strerror(errno)) }
            return error == 0 ? nil : String(cString: strerror(error))
        }
        return "timed out after \(String(format: "%.0f", timeout)) s"
    }

    func send(_ bytes: [UInt8]) throws {
        #if canImport(Glibc)
        let flags = Int32(MSG_NOSIGNAL)  // a closed peer must not kill the process with SIGPIPE
        #else
        let flags: Int32 = 0
        #endif
        var sent = 0
        var waits = 0
        while sent < bytes.count {
            let count = bytes.withUnsafeBytes { Foundation.send(fd, $0.baseAddress! + sent, bytes.count - sent, flags) }
            if count >= 0 {
                sent += count
                continue
            }
            guard errno == EAGAIN || errno == EINTR, waits < 50 else {
                throw HTTPSource.Transient("sending the request failed (\(String(cString: strerror(errno))))")
            }
            waits += 1
            var descriptor = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = poll(&descriptor, 1, cancelCheckMilliseconds)
        }
    }

    /// Reads what has arrived (at most the buffer); 0 when the peer closed. Throws `Transient` on an error
    /// or when nothing arrives for `stallTimeout` seconds; returns 0 once the sink is cancelled.
    func receive(into buffer: UnsafeMutableRawBufferPointer, stallTimeout: Double, sink: FrameSink) throws -> Int {
        let deadline = Date().addingTimeInterval(stallTimeout)
        while true {
            if sink.isCancelled { return 0 }
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, cancelCheckMilliseconds)
            if ready < 0, errno != EINTR { throw HTTPSource.Transient("poll failed (\(String(cString: strerror(errno))))") }
            if ready <= 0 {
                if Date() >= deadline { throw HTTPSource.Transient("no data for \(String(format: "%.0f", stallTimeout)) s") }
                continue
            }
            let count = recv(fd, buffer.baseAddress, buffer.count, 0)
            if count >= 0 { return count }
            if errno == EAGAIN || errno == EINTR { continue }
            throw HTTPSource.Transient("the connection failed (\(String(cString: strerror(errno))))")
        }
    }
}
