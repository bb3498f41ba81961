import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A loopback HTTP server that plays a script of connections, as a camera that serves
/// `multipart/x-mixed-replace` would, including going away and coming back on the same port.
final class MJPEGTestServer: @unchecked Sendable {
    struct Connection {
        /// The status line and headers, without the empty line that ends them.
        var head = "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame"
        /// Body pieces, each sent after `interval` seconds.
        var pieces: [Data] = []
        var interval = 0.1
        /// Repeat the last piece until the server stops, instead of closing.
        var repeatLast = false
        /// After closing, keep the port closed this long (the camera is gone), then listen again.
        var downtime = 0.0
    }

    /// A multipart part as cameras send it.
    static func part(_ jpeg: Data, boundary: String = "frame") -> Data {
        Data("--\(boundary)\r\nContent-Type: image/jpeg\r\nContent-Length: \(jpeg.count)\r\n\r\n".utf8) + jpeg + Data("\r\n".utf8)
    }

    private(set) var port: UInt16 = 0
    private var listener: Int32 = -1
    private let lock = NSLock()
    private var stopped = false
    private var requestsSeen: [String] = []
    private let done = DispatchSemaphore(value: 0)

    init(_ script: [Connection]) throws {
        listener = try Self.listen(port: 0)
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
        port = UInt16(bigEndian: address.sin_port)
        let thread = Thread { [self] in
            play(script)
            done.signal()
        }
        thread.start()
    }

    var url: String { "http://127.0.0.1:\(port)" }

    /// The request heads received so far.
    var requests: [String] {
        lock.lock()
        defer { lock.unlock() }
        return requestsSeen
    }

    /// Ends the script (a repeating connection stops) and waits for the server thread, at most 5 s.
    func stop() {
        lock.lock()
        stopped = true
        lock.unlock()
        _ = done.wait(timeout: .now() + 5)
        if listener >= 0 { close(listener) }
    }

    private var isStopped: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stopped
    }

    private static func listen(port: UInt16) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, Glibc.listen(fd, 4) == 0 else {
            close(fd)
            throw TestError("cannot listen on 127.0.0.1:\(port): \(String(cString: strerror(errno)))")
        }
        return fd
    }

    private func play(_ script: [Connection]) {
        for connection in script {
            guard let client = accept(within: 15) else { return }
            serve(connection, on: client)
            close(client)
            if connection.downtime > 0 {
                close(listener)
                listener = -1
                usleep(UInt32(connection.downtime * 1_000_000))
                guard let again = try? Self.listen(port: port) else { return }
                listener = again
            }
        }
    }

    private func accept(within seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline, !isStopped {
            var descriptor = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            if poll(&descriptor, 1, 100) > 0 {
                let client = Glibc.accept(listener, nil, nil)
                if client >= 0 { return client }
            }
        }
        return nil
    }

    private func serve(_ connection: Connection, on client: Int32) {
        // The request head: read until the empty line (bounded).
        var request = [UInt8]()
        var byte: UInt8 = 0
        while request.count < 8192, !String(decoding: request.suffix(4), as: UTF8.self).hasSuffix("\r\n\r\n") {
            var descriptor = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
            guard poll(&descriptor, 1, 5000) > 0, recv(client, &byte, 1, 0) == 1 else { return }
            request.append(byte)
        }
        lock.lock()
        requestsSeen.append(String(decoding: request, as: UTF8.self))
        lock.unlock()
        guard send(Data((connection.head + "\r\n\r\n").utf8), to: client) else { return }
        for piece in connection.pieces {
            guard !isStopped, send(piece, to: client) else { return }
            usleep(UInt32(connection.interval * 1_000_000))
        }
        while connection.repeatLast, let last = connection.pieces.last, !isStopped {
            guard send(last, to: client) else { return }
            usleep(UInt32(connection.interval * 1_000_000))
        }
    }

    private func send(_ data: Data, to client: Int32) -> Bool {
        data.withUnsafeBytes { bytes in
            var sent = 0
            while sent < bytes.count {
                let count = Glibc.send(client, bytes.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL))
                guard count > 0 else { return false }
                sent += count
            }
            return true
        }
    }
}

struct TestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
