import Foundation
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(Glibc)
import Glibc
#endif

// MARK: - The demo examples as camera frames

/// Models/examples/examples.json: each example with the caption its scene was drawn with (Tools/scenes.py).
struct CameraExample: Decodable {
    let file: String
    let caption: String
    var path: String { packageRoot.appendingPathComponent("Models/examples").appendingPathComponent(file).path }

    private struct File: Decodable { let examples: [CameraExample] }
    static let all: [CameraExample] = try! JSONDecoder().decode(
        File.self, from: Data(contentsOf: packageRoot.appendingPathComponent("Models/examples/examples.json"))).examples

    /// The picture as a camera would send it: one JPEG made by Debian's ffmpeg at high quality.
    func jpeg() throws -> Data {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-i", path, "-q:v", "2", "-f", "mjpeg", "-"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0, data.starts(with: [0xFF, 0xD8]) else { throw ServerStartError(description: "ffmpeg could not encode \(file)") }
        return data
    }
}

/// A temporary file removed with the value.
final class TemporaryFile {
    let path: String
    init(_ data: Data, suffix: String = ".jpg") throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("blip2-camera-\(UUID().uuidString)\(suffix)").path
        try data.write(to: URL(fileURLWithPath: path))
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// `blip2 caption` on these bytes: what the camera's caption of the frame must equal.
func cliCaption(_ jpeg: Data) throws -> String {
    let file = try TemporaryFile(jpeg)
    return try cli(["caption", demoModel, file.path])[0]
}

/// A server-sent-event stream read over a raw socket, event by event, every wait bounded. The body comes
/// in HTTP/1.1 chunks (RFC 9112, 7.1), undone here before the events are parsed.
final class EventStream {
    let connection: RawConnection
    private var raw = Data()
    private var headRead = false
    private var decoded = ""

    init(port: Int, path: String = "/v1/camera/events") throws {
        connection = try RawConnection(port: port)
        connection.send(rawRequest("GET", path, port: port))
    }

    /// Takes what has arrived, waiting up to the socket's 30 s timeout; false when nothing came.
    private func receive() -> Bool {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(connection.socket, &buffer, buffer.count, 0)
        guard count > 0 else { return false }
        raw.append(contentsOf: buffer[0..<count])
        return true
    }

    /// The response head (status line and headers).
    func head() -> String {
        let end = Data("\r\n\r\n".utf8)
        while raw.range(of: end) == nil, receive() {}
        guard let range = raw.range(of: end) else { return String(decoding: raw, as: UTF8.self) }
        defer {
            raw = Data(raw[range.upperBound...])
            headRead = true
        }
        return String(decoding: raw[..<range.lowerBound], as: UTF8.self)
    }

    /// Moves every complete chunk from `raw` to `decoded`.
    private func dechunk() {
        let crlf = Data("\r\n".utf8)
        while let line = raw.range(of: crlf), let size = Int(String(decoding: raw[..<line.lowerBound], as: UTF8.self), radix: 16),
              raw.count >= line.upperBound - raw.startIndex + size + 2 {
            let body = raw[line.upperBound..<line.upperBound + size]
            decoded += String(decoding: body, as: UTF8.self)
            raw = Data(raw[(line.upperBound + size + 2)...])
        }
    }

    /// Events until one named `name` whose data satisfies `match`, at most `seconds`; nil if none came.
    func next(_ name: String, within seconds: Double = 60, where match: ([String: Any]) -> Bool = { _ in true }) -> [String: Any]? {
        if !headRead { _ = head() }
        let deadline = Date().addingTimeInterval(seconds)
        repeat {
            dechunk()
            while let cut = decoded.range(of: "\n\n") {
                let frame = String(decoded[..<cut.upperBound])
                decoded = String(decoded[cut.upperBound...])
                for (event, data) in events(frame) where event == name {
                    if let object = try? JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any], match(object) { return object }
                }
            }
        } while Date() < deadline && receive()
        return nil
    }

    func close() { connection.close() }
}

// MARK: - Tests

/// `blip2 serve --camera`: the camera's routes, its event stream, and its sharing of the one model, against
/// the running executable on loopback, fed real JPEGs made by ffmpeg.
@Suite("blip2 serve --camera", .serialized)
struct CameraTests {
    init() {
        // Writing to a server that has exited must fail the write, not kill the test process.
        signal(SIGPIPE, SIG_IGN)
    }

    @Test("frames through a pipe: latest JSON, the frame's bytes, events pushed as they come, the end of the stream")
    func cameraThroughAPipe() async throws {
        let first = CameraExample.all[0], second = CameraExample.all[2]
        let (jpegA, jpegB) = (try first.jpeg(), try second.jpeg())
        // The ground truth, and the CLI on the very bytes the camera sends.
        let expectedA = try cliCaption(jpegA), expectedB = try cliCaption(jpegB)
        #expect(expectedA == first.caption && expectedB == second.caption)

        let camera = Pipe()
        let server = try ServerProcess(["--camera", "-", "--camera-min-change", "0"], input: camera)
        let base = server.base

        // Nothing yet: 204s, and the camera's totals in /health.
        #expect(try await http("GET", base + "/v1/camera/latest").status == 204)
        #expect(try await http("GET", base + "/v1/camera/latest.jpg").status == 204)
        #expect(try await http("GET", base + "/v1/camera/frame.jpg").status == 204)
        let idle = try #require(try await http("GET", base + "/health").json["camera"] as? [String: Any])
        #expect(idle["state"] as? String == "watching" && idle["source"] as? String == "standard input" && idle["frames_seen"] as? Int == 0)

        camera.fileHandleForWriting.write(jpegA)
        #expect(try await eventually(timeout: 60) { try await http("GET", base + "/v1/camera/latest").status == 200 })
        let latest = try await http("GET", base + "/v1/camera/latest")
        #expect(latest.header("Content-Type") == "application/json")
        let json = latest.json
        #expect(json["text"] as? String == expectedA)
        #expect(json["frame"] as? Int == 1)
        #expect(json["frames_seen"] as? Int == 1 && json["frames_dropped"] as? Int == 0)
        #expect(json["frames_unchanged"] as? Int == 0 && json["frames_invalid"] as? Int == 0)
        #expect((json["answers"] as? [Any])?.isEmpty == true)
        #expect((json["latency_ms"] as? Double ?? 0) > 0)
        #expect(json["image"] as? String == "/v1/camera/latest.jpg" && json["model"] as? String == "demo-q8")
        let time = try #require(json["time"] as? String)
        let parser = ISO8601DateFormatter()
        parser.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let arrival = try #require(parser.date(from: time))
        #expect(abs(arrival.timeIntervalSinceNow) < 120)
        let timings = try #require(json["timings_ms"] as? [String: Double])
        #expect(Set(["wait", "image_decode", "change", "model_wait", "preprocess", "vision", "qformer_projection", "prefill", "generate", "total"])
            .isSubset(of: Set(timings.keys)), "\(timings.keys)")
        let status = try #require(json["camera"] as? [String: Any])
        #expect(status["state"] as? String == "watching" && status["frames_captioned"] as? Int == 1)

        // The captioned frame and the newest one: the camera's bytes exactly.
        let picture = try await http("GET", base + "/v1/camera/latest.jpg")
        #expect(picture.status == 200 && picture.header("Content-Type") == "image/jpeg")
        #expect(picture.body == jpegA)
        #expect(picture.header("X-Frame-Number") == "1")
        #expect(try await http("GET", base + "/v1/camera/frame.jpg").body == jpegA)

        // A listener gets the state and the latest caption at once, then the next caption when it comes.
        let listener = try EventStream(port: server.port)
        let head = listener.head()
        #expect(head.hasPrefix("HTTP/1.1 200"), "\(head)")
        #expect(head.lowercased().contains("content-type: text/event-stream"))
        #expect(listener.next("status")?["state"] as? String == "watching")
        #expect(listener.next("caption")?["text"] as? String == expectedA)
        camera.fileHandleForWriting.write(jpegB)
        let pushed = try #require(listener.next("caption", within: 60) { $0["frame"] as? Int == 2 })
        #expect(pushed["text"] as? String == expectedB)
        #expect(pushed["frames_seen"] as? Int == 2)
        #expect(try await http("GET", base + "/v1/camera/latest.jpg").body == jpegB)
        // /v1/latest serves the camera's caption too.
        #expect(try await http("GET", base + "/v1/latest").json["text"] as? String == expectedB)

        let metrics = try await http("GET", base + "/metrics").text
        #expect(metrics.contains(#"blip2_camera_frames_total{outcome="seen"} 2"#), "\(metrics)")
        #expect(metrics.contains(#"blip2_camera_frames_total{outcome="captioned"} 2"#))
        #expect(metrics.contains(#"blip2_camera_frames_total{outcome="dropped"} 0"#))
        #expect(metrics.contains("blip2_camera_caption_latency_seconds_count 2"))
        #expect(metrics.contains("blip2_camera_listeners 1"))

        // The end of the stream: the server keeps serving the last caption, and says the camera ended.
        try camera.fileHandleForWriting.close()
        #expect(listener.next("status") { $0["state"] as? String == "ended" } != nil)
        let ended = try await http("GET", base + "/v1/camera/latest")
        #expect(ended.json["text"] as? String == expectedB)
        #expect((ended.json["camera"] as? [String: Any])?["state"] as? String == "ended")
        #expect(try await http("GET", base + "/health").status == 200)
        #expect(server.errorText.contains("camera: standard input: the stream ended"), "\(server.errorText)")

        // SIGTERM with a listener still connected: its stream ends and the server exits 0.
        #expect(server.stop() == 0, "blip2 serve must exit 0 on SIGTERM with a camera listener open")
        listener.close()
    }

    @Test("an ffmpeg-made MJPEG file: the newest frame wins and its caption is the latest; every frame is accounted for")
    func mjpegFile() async throws {
        let frames = try CameraExample.all.map { try $0.jpeg() }
        let stream = frames.reduce(Data(), +)
        let last = try #require(CameraExample.all.last)
        let file = try TemporaryFile(stream, suffix: ".mjpeg")
        let server = try ServerProcess(["--camera", file.path])
        #expect(try await eventually(timeout: 60) {
            (try await http("GET", server.base + "/health").json["camera"] as? [String: Any])?["state"] as? String == "ended"
        })
        let latest = try await http("GET", server.base + "/v1/camera/latest").json
        #expect(latest["text"] as? String == last.caption)
        #expect(latest["frame"] as? Int == CameraExample.all.count)
        let status = try #require(latest["camera"] as? [String: Any])
        let count = { (key: String) in status[key] as? Int ?? -1 }
        #expect(count("frames_seen") == CameraExample.all.count)
        #expect(count("frames_seen") == count("frames_captioned") + count("frames_dropped") + count("frames_unchanged") + count("frames_invalid"))
        #expect(try await http("GET", server.base + "/v1/camera/latest.jpg").body == frames.last)
        #expect(server.stop() == 0)
    }

    @Test("a camera kept busy by a 30 fps feed does not hold up requests, and every request gets the CLI's answer")
    func requestsGoFirst() async throws {
        let image = try Data(contentsOf: exampleImage)
        let expected = try cli(["caption", demoModel, exampleImage.path])[0]
        // ffmpeg's test pattern in real time (-re): every frame differs (its counter and moving gradient).
        let feed = Pipe()
        let ffmpeg = Process()
        ffmpeg.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        ffmpeg.arguments = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=30",
                            "-t", "60", "-q:v", "4", "-f", "mjpeg", "-"]
        ffmpeg.standardOutput = feed
        ffmpeg.standardError = FileHandle.nullDevice
        try ffmpeg.run()
        defer { if ffmpeg.isRunning { ffmpeg.terminate() } }
        let server = try ServerProcess(["--camera", "-", "--camera-min-change", "0"], input: feed)
        func status() async throws -> [String: Any] { try await http("GET", server.base + "/health").json["camera"] as? [String: Any] ?? [:] }
        #expect(try await eventually(timeout: 60) { (try await status()["frames_captioned"] as? Int ?? 0) >= 2 })
        for _ in 0..<4 {
            let answer = try await http("POST", server.base + "/v1/caption", body: jsonBody(["image": image.base64EncodedString()]),
                                        headers: ["Content-Type": "application/json"])
            #expect(answer.status == 200)
            #expect(answer.json["text"] as? String == expected)
        }
        let counts = try await status()
        let seen = counts["frames_seen"] as? Int ?? 0, captioned = counts["frames_captioned"] as? Int ?? 0
        // The camera went on captioning between the requests, and frames it could not take were dropped for newer ones.
        #expect(captioned >= 3)
        #expect((counts["frames_dropped"] as? Int ?? 0) > 0)
        #expect(seen >= captioned + (counts["frames_dropped"] as? Int ?? 0))
        #expect(server.stop() == 0)
    }

    @Test("without --camera the camera routes are a 404 naming the flag")
    func noCamera() async throws {
        let server = try ServerProcess()
        for path in ["/v1/camera/latest", "/v1/camera/latest.jpg", "/v1/camera/frame.jpg", "/v1/camera/events"] {
            let answer = try await http("GET", server.base + path)
            #expect(answer.status == 404, "\(path)")
            #expect(answer.error["code"] as? String == "no_camera", "\(path)")
            #expect((answer.error["message"] as? String)?.contains("--camera SOURCE") == true)
        }
        #expect(try await http("GET", server.base + "/v1/latest").status == 404)
        #expect(try await http("GET", server.base + "/health").json["camera"] == nil)
        #expect(server.stop() == 0)
    }

    @Test("bad camera sources and options are refused at startup, naming the flag")
    func refusals() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("blip2-no-such-\(UUID().uuidString)").path
        let cases: [([String], Int32, String)] = [
            (["--camera", folder], 1, "error: --camera \(folder): no such file or folder"),
            (["--camera", "https://camera.local/stream"], 1, "error: --camera https://camera.local/stream: https is not supported"),
            (["--camera", "rtsp://camera.local/stream"], 1, "error: --camera rtsp://camera.local/stream: only http:// URLs"),
            (["--camera", "-", "--camera-ask", String(repeating: "why is it so ", count: 200)], 1, "error: --camera-ask:"),
            (["--camera-every", "5"], 64, "--camera-every needs --camera SOURCE"),
            (["--camera", "-", "--camera-min-change", "2"], 64, "error: --camera-min-change 2: it must be between 0 and 1"),
            (["--camera", "-", "--camera-every=-1"], 64, "error: --camera-every -1: it must be 0 or more seconds"),
            (["--camera", "-", "--camera-ask", " "], 64, "--camera-ask needs a question"),
        ]
        for (arguments, status, message) in cases {
            let process = Process()
            process.executableURL = blip2Executable
            process.arguments = ["serve", demoModel, "--port", "0"] + arguments
            let out = Pipe(), err = Pipe()
            process.standardOutput = out
            process.standardError = err
            process.standardInput = Pipe()
            try process.run()
            let deadline = Date().addingTimeInterval(60)
            while process.isRunning && Date() < deadline { usleep(20_000) }
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                Issue.record("blip2 serve \(arguments) kept running")
                continue
            }
            let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(process.terminationStatus == status, "\(arguments): \(stderr)")
            #expect(stderr.contains(message), "\(arguments): \(stderr)")
            // It never started listening.
            #expect(!String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).contains("http://"))
        }
    }
}
