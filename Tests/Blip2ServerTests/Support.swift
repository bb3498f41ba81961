import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(Glibc)
import Glibc
#endif

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let demoModel = packageRoot.appendingPathComponent("Models/demo-q8.blip2").path
let exampleImage = packageRoot.appendingPathComponent("Models/examples/row-42-16.png")

/// The built `blip2` executable, beside the test bundle.
let blip2Executable: URL = {
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    while !FileManager.default.fileExists(atPath: dir.appendingPathComponent("blip2").path), dir.path != "/" {
        dir = dir.deletingLastPathComponent()
    }
    return dir.appendingPathComponent("blip2")
}()

/// Runs the CLI and returns its standard output lines.
func cli(_ arguments: [String], stdin: String? = nil) throws -> [String] {
    let process = Process()
    process.executableURL = blip2Executable
    process.arguments = arguments
    let out = Pipe(), input = Pipe()
    process.standardOutput = out
    process.standardInput = input
    process.standardError = FileHandle.nullDevice
    try process.run()
    if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
    try input.fileHandleForWriting.close()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
}

struct ServerStartError: Error, CustomStringConvertible { let description: String }

/// `blip2 serve` on a free loopback port, stopped with SIGTERM.
final class ServerProcess: @unchecked Sendable {
    let process = Process()
    let port: Int
    let base: String
    private let stderr = Pipe()
    private let errors = CollectedOutput()

    /// `input`: the server's standard input (a Pipe or FileHandle; nil: the test's own).
    init(_ extra: [String] = [], input: Any? = nil) throws {
        process.executableURL = blip2Executable
        process.arguments = ["serve", demoModel, "--port", "0"] + extra
        let out = Pipe()
        process.standardOutput = out
        process.standardError = stderr
        if let input { process.standardInput = input }
        try process.run()
        // Read as it comes, so that a talkative server never blocks on a full pipe.
        let errors = self.errors
        stderr.fileHandleForReading.readabilityHandler = { handle in errors.append(handle.availableData) }
        // The first line names the URL once the socket is bound.
        var line = Data()
        let handle = out.fileHandleForReading
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let byte = handle.readData(ofLength: 1)
            if byte.isEmpty || byte == Data("\n".utf8) { break }
            line.append(byte)
        }
        let text = String(decoding: line, as: UTF8.self)
        guard let range = text.range(of: #"http://127\.0\.0\.1:(\d+)/"#, options: .regularExpression),
              let port = Int(text[range].split(separator: ":").last!.dropLast()) else {
            process.terminate()
            throw ServerStartError(description: "blip2 serve printed \(text.debugDescription)")
        }
        self.port = port
        base = "http://127.0.0.1:\(port)"
    }

    /// What the server wrote to standard error so far.
    var errorText: String { errors.text }

    /// Sends a signal and waits (bounded) for the exit status.
    func stop(signal: Int32 = SIGTERM, timeout: TimeInterval = 30) -> Int32? {
        if process.isRunning { kill(process.processIdentifier, signal) }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            process.terminate()
            return nil
        }
        return process.terminationStatus
    }

    deinit {
        stderr.fileHandleForReading.readabilityHandler = nil
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}

/// Output gathered from a pipe as it comes.
final class CollectedOutput: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    func append(_ chunk: Data) { lock.withLock { data.append(chunk) } }
    var text: String { lock.withLock { String(decoding: data, as: UTF8.self) } }
}

struct HTTPResult {
    let status: Int
    let headers: [String: String]
    let body: Data
    var text: String { String(decoding: body, as: UTF8.self) }
    var json: [String: Any] { ((try? JSONSerialization.jsonObject(with: body)) as? [String: Any]) ?? [:] }
    var error: [String: Any] { json["error"] as? [String: Any] ?? [:] }
    func header(_ name: String) -> String? { headers.first { $0.key.lowercased() == name.lowercased() }?.value }
}

/// A real HTTP client: URLSession.
func http(_ method: String, _ url: String, body: Data? = nil, headers: [String: String] = [:]) async throws -> HTTPResult {
    var request = URLRequest(url: URL(string: url)!)
    request.httpMethod = method
    request.httpBody = body
    request.timeoutInterval = 60
    for (k, v) in headers { request.setValue(v, forHTTPHeaderField: k) }
    let session = URLSession(configuration: .ephemeral)
    defer { session.finishTasksAndInvalidate() }
    let (data, response) = try await session.data(for: request)
    let r = response as! HTTPURLResponse
    var fields: [String: String] = [:]
    for (k, v) in r.allHeaderFields { fields["\(k)"] = "\(v)" }
    return HTTPResult(status: r.statusCode, headers: fields, body: data)
}

func jsonBody(_ object: [String: Any]) -> Data { try! JSONSerialization.data(withJSONObject: object) }

struct Multipart {
    let boundary = "blip2-test-\(UUID().uuidString)"
    var body = Data()
    mutating func field(_ name: String, _ value: String) {
        body.append(Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\"\r\n\r\n\(value)\r\n".utf8))
    }
    mutating func file(_ name: String, _ data: Data, filename: String = "picture.png") {
        body.append(Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\"; filename=\"\(filename)\"\r\nContent-Type: image/png\r\n\r\n".utf8))
        body.append(data)
        body.append(Data("\r\n".utf8))
    }
    func finished() -> (Data, [String: String]) {
        (body + Data("--\(boundary)--\r\n".utf8), ["Content-Type": "multipart/form-data; boundary=\(boundary)"])
    }
}

/// Server-sent events: (event name, data) pairs.
func events(_ text: String) -> [(String, String)] {
    text.components(separatedBy: "\n\n").compactMap { frame in
        var name = "message", data = ""
        for line in frame.split(separator: "\n") {
            if line.hasPrefix("event: ") { name = String(line.dropFirst(7)) }
            if line.hasPrefix("data: ") { data += line.dropFirst(6) }
        }
        return data.isEmpty ? nil : (name, data)
    }
}

/// A raw TCP client, for what URLSession will not do: unnormalised paths and hanging up mid-answer.
final class RawConnection {
    let socket: Int32

    init(port: Int) throws {
        socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else { throw ServerStartError(description: "connect failed") }
    }

    func send(_ data: Data) {
        data.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = Glibc.send(socket, buffer.baseAddress! + offset, buffer.count - offset, Int32(MSG_NOSIGNAL))
                if n <= 0 { return }
                offset += n
            }
        }
    }

    /// Reads until `marker` appears, the peer closes, or the timeout.
    func read(until marker: String? = nil) -> String {
        var received = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(socket, &buffer, buffer.count, 0)
            if n <= 0 { break }
            received.append(contentsOf: buffer[0..<n])
            if let marker, String(decoding: received, as: UTF8.self).contains(marker) { break }
        }
        return String(decoding: received, as: UTF8.self)
    }

    func close() { Glibc.close(socket) }
}

func rawRequest(_ method: String, _ path: String, port: Int, body: Data = Data(), contentType: String = "application/json") -> Data {
    var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\n"
    if !body.isEmpty { head += "Content-Type: \(contentType)\r\nContent-Length: \(body.count)\r\n" }
    return Data((head + "\r\n").utf8) + body
}

/// A PNG whose header declares `width` x `height` pixels: a decompression bomb's first bytes.
func pngHeader(width: UInt32, height: UInt32) -> Data {
    func crc32(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        return ~crc
    }
    func be(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)] }
    func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let body = Array(type.utf8) + data
        return be(UInt32(data.count)) + body + be(crc32(body))
    }
    let ihdr = be(width) + be(height) + [8, 2, 0, 0, 0]
    // A tiny deflate stream (zlib header + an empty stored block); the decoder must refuse at the header.
    let idat: [UInt8] = [0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]
    return Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", ihdr) + chunk("IDAT", idat) + chunk("IEND", []))
}

/// Polls until `condition` holds. The bound only catches a condition that never comes: it is far beyond
/// what a slow, loaded machine needs, and a passing test never waits for it.
func eventually(timeout: TimeInterval = 60, _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try await condition() { return true }
        try? await Task.sleep(nanoseconds: 50_000_000)
    }
    return false
}

/// Generation jobs the model has taken from the queue so far: the count of the `queue_wait` stage, which a
/// job records as it starts on the model thread (before its image is encoded or a token generated).
func jobsStarted(_ server: ServerProcess) async throws -> Double {
    metric(try await http("GET", server.base + "/metrics").text, #"blip2_stage_duration_seconds_count{stage="queue_wait"}"#) ?? 0
}

func metric(_ text: String, _ name: String) -> Double? {
    for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
        return Double(line.split(separator: " ").last!)
    }
    return nil
}
