import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Running `blip2 watch` and its camera stand-ins

/// A process whose output is collected as it comes, so a test can wait for a line, signal it, and
/// bound every wait.
final class RunningCommand: @unchecked Sendable {
    let process = Process()
    private let lock = NSLock()
    private var out = Data()
    private var err = Data()
    private var readers: [Thread] = []
    private let readersDone = DispatchGroup()

    /// `input`: a Pipe or FileHandle for standard input (nil: /dev/null).
    init(_ executable: URL, _ arguments: [String], input: Any? = nil) throws {
        process.executableURL = executable
        process.arguments = arguments
        process.standardInput = input ?? FileHandle.nullDevice
        let outPipe = Pipe(), errPipe = Pipe()
        process.standardOutput = outPipe
        process.standardError = errPipe
        try process.run()
        for (handle, isOut) in [(outPipe.fileHandleForReading, true), (errPipe.fileHandleForReading, false)] {
            readersDone.enter()
            let reader = Thread { [self] in
                while true {
                    let chunk = handle.availableData
                    if chunk.isEmpty { break }
                    lock.lock()
                    if isOut { out += chunk } else { err += chunk }
                    lock.unlock()
                }
                readersDone.leave()
            }
            reader.start()
            readers.append(reader)
        }
    }

    var stdout: String {
        lock.lock()
        defer { lock.unlock() }
        return String(decoding: out, as: UTF8.self)
    }

    var stderr: String {
        lock.lock()
        defer { lock.unlock() }
        return String(decoding: err, as: UTF8.self)
    }

    /// Standard output's complete lines, as JSON objects.
    var jsonLines: [[String: Any]] {
        stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    /// Waits until `condition` holds, at most `seconds`; throws (and kills the process) if it never does.
    func wait(_ what: String, seconds: Double, until condition: (RunningCommand) -> Bool) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while !condition(self) {
            guard Date() < deadline, process.isRunning || condition(self) else {
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
                throw TestError("waited \(seconds) s for \(what); stdout: \(stdout.suffix(2000)) stderr: \(stderr.suffix(2000))")
            }
            usleep(20_000)
        }
    }

    /// Waits for the process to end (at most `seconds`, then kills it and throws); returns its status.
    func finish(seconds: Double = 120) throws -> Int32 {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning {
            guard Date() < deadline else {
                kill(process.processIdentifier, SIGKILL)
                throw TestError("\(process.arguments ?? []) did not end within \(seconds) s; stderr: \(stderr.suffix(2000))")
            }
            usleep(20_000)
        }
        _ = readersDone.wait(timeout: .now() + 5)
        return process.terminationStatus
    }
}

/// Runs Debian's ffmpeg (`.ci/run` installs it).
func startFFmpeg(_ arguments: [String], output: Any? = nil) throws -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin"] + arguments
    process.standardOutput = output ?? FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    return process
}

/// ffmpeg's output for `arguments` (written to standard output).
func ffmpegOutput(_ arguments: [String]) throws -> Data {
    let pipe = Pipe()
    let process = try startFFmpeg(arguments, output: pipe)
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0, !data.isEmpty else { throw TestError("ffmpeg \(arguments) failed") }
    return data
}

/// Totals from the last line `blip2 watch` writes to standard error.
struct WatchTotals: Equatable {
    var seen = 0, captioned = 0, dropped = 0, unchanged = 0, invalid = 0
    var ending = ""

    init(seen: Int, captioned: Int, dropped: Int, unchanged: Int, invalid: Int, ending: String) {
        (self.seen, self.captioned, self.dropped, self.unchanged, self.invalid, self.ending) = (seen, captioned, dropped, unchanged, invalid, ending)
    }

    /// "watch: N frames: C captioned, D dropped for newer ones, U unchanged, I invalid; ENDING"
    init(_ stderr: String) throws {
        guard let line = stderr.split(separator: "\n").last(where: { $0.hasPrefix("watch: ") && $0.contains(" frames: ") }) else {
            throw TestError("no totals line in: \(stderr)")
        }
        let numbers = line.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        guard numbers.count == 5, let semicolon = line.firstIndex(of: ";") else { throw TestError("unexpected totals line: \(line)") }
        (seen, captioned, dropped, unchanged, invalid) = (numbers[0], numbers[1], numbers[2], numbers[3], numbers[4])
        ending = line[line.index(after: semicolon)...].trimmingCharacters(in: .whitespaces)
    }
}

/// The bundled demo model and its examples' ground truth (Models/examples/examples.json, Tools/scenes.py).
enum Demo {
    static let model = packageRoot.appendingPathComponent("Models/demo-q8.blip2").path
    static let examples = packageRoot.appendingPathComponent("Models/examples")

    struct Example: Decodable {
        let file: String
        let layout: String
        let caption: String
        var path: String { examples.appendingPathComponent(file).path }
        /// Answer to "how many objects are there?": the layouts draw 1, 2, 2, 3 objects (Tools/scenes.py).
        var objectCount: String { ["single": "one", "horizontal": "two", "vertical": "two", "row": "three"][layout]! }
        /// The picture as one high-quality JPEG made by ffmpeg.
        func jpeg() throws -> Data { try ffmpegOutput(["-i", path, "-q:v", "2", "-f", "mjpeg", "-"]) }
    }
    private struct File: Decodable { let examples: [Example] }

    static let all: [Example] = try! JSONDecoder().decode(File.self, from: Data(contentsOf: examples.appendingPathComponent("examples.json"))).examples

    static func example(_ file: String) -> Example { all.first { $0.file == file }! }
}

let contractFields: Set<String> = ["time", "source", "frame", "frames_seen", "frames_dropped", "frames_unchanged", "frames_invalid", "text",
                                   "answers", "latency_ms", "timings_ms"]

// MARK: - Tests

@Suite(.serialized) struct WatchCommandTests {
    init() {
        // Writing to a command that has exited must fail the write, not kill the test process.
        signal(SIGPIPE, SIG_IGN)
    }

    @Test func ffmpegTestsrcThroughAPipe() throws {
        let scratch = Scratch()
        let pipe = Pipe()
        let source = try startFFmpeg(["-f", "lavfi", "-i", "testsrc=size=96x72:rate=30", "-frames:v", "30", "-q:v", "4", "-f", "mjpeg", "-"], output: pipe)
        let output = scratch.path("captions.jsonl"), saved = scratch.path("frames")
        let watch = try RunningCommand(blip2.url, ["watch", Demo.model, "-", "--json", "--min-change", "0", "--output", output,
                                                   "--save-frames", saved], input: pipe)
        #expect(try watch.finish() == 0, "\(watch.stderr)")
        source.waitUntilExit()
        let lines = watch.jsonLines
        #expect(!lines.isEmpty)
        for line in lines {
            #expect(contractFields.isSubset(of: Set(line.keys)), "\(line.keys)")
            #expect(line["source"] as? String == "-", "a stream's records name it as given")
            #expect((line["text"] as? String)?.isEmpty == false)
            let timings = line["timings_ms"] as? [String: Double] ?? [:]
            #expect(Set(["wait", "image_decode", "change", "preprocess", "vision", "qformer_projection", "prefill", "generate", "total"]).isSubset(of: Set(timings.keys)))
            let saved = try #require(line["saved_frame"] as? String)
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: saved)))
            #expect(bytes.prefix(2) == [0xFF, 0xD8] && bytes.suffix(2) == [0xFF, 0xD9])
        }
        let frames = lines.compactMap { $0["frame"] as? Int }
        #expect(zip(frames, frames.dropFirst()).allSatisfy { $0 < $1 })
        #expect(frames.last == 30)  // the stream's last frame is always captioned before the command ends
        let totals = try WatchTotals(watch.stderr)
        #expect(totals.seen == 30 && totals.captioned == lines.count && totals.invalid == 0 && totals.unchanged == 0)
        #expect(totals.captioned + totals.dropped == 30)
        #expect(totals.ending == "the stream ended")
        // --output holds the same lines as standard output.
        #expect(try String(contentsOfFile: output, encoding: .utf8) == watch.stdout)
    }

    /// A 30 fps feed of the demo examples (40 frames each) and a model slower than 33 ms a frame (beam search
    /// and a question, far slower than that on any machine): each caption is of the newest frame and right
    /// for it, and every frame is accounted for. Frames left of a scene after its caption are unchanged; how
    /// many depends on the machine's speed, so that is checked only where the records show it must happen.
    @Test func latestFrameWinsOnA30fpsFeed() throws {
        let scratch = Scratch()
        let stream = scratch.path("examples.mjpeg")
        var bytes = Data()
        for example in Demo.all {
            bytes += try ffmpegOutput(["-loop", "1", "-i", example.path, "-frames:v", "40", "-q:v", "2", "-f", "mjpeg", "-"])
        }
        try bytes.write(to: URL(fileURLWithPath: stream))
        let pipe = Pipe()
        let source = try startFFmpeg(["-re", "-f", "mjpeg", "-framerate", "30", "-i", stream, "-c", "copy", "-f", "mjpeg", "-"], output: pipe)
        let watch = try RunningCommand(blip2.url, ["watch", Demo.model, "-", "--json", "--beams", "5", "--ask", "how many objects are there?"],
                                       input: pipe)
        #expect(try watch.finish() == 0, "\(watch.stderr)")
        source.waitUntilExit()
        let lines = watch.jsonLines
        #expect(lines.count >= 2)
        var previousSeen = 0
        // A caption that ended before the last frame of its scene arrived: the next frame taken is of the same
        // scene (frames arrive in order), so it is found unchanged.
        var sceneOutlastedACaption = false
        for line in lines {
            let frame = try #require(line["frame"] as? Int)
            let example = Demo.all[(frame - 1) / 40]
            if let seen = line["frames_seen"] as? Int, seen < 40 * ((frame - 1) / 40 + 1) { sceneOutlastedACaption = true }
            #expect(line["text"] as? String == example.caption, "frame \(frame)")
            #expect((line["answers"] as? [[String: String]])?.first?["answer"] == example.objectCount, "frame \(frame)")
            // Latest frame wins: the frame taken after a line is at least the newest one seen by then.
            #expect(frame >= previousSeen, "frame \(frame) after \(previousSeen) frames were seen")
            previousSeen = try #require(line["frames_seen"] as? Int)
        }
        let totals = try WatchTotals(watch.stderr)
        #expect(totals.seen == 40 * Demo.all.count && totals.invalid == 0)
        #expect(totals.dropped == totals.seen - totals.captioned - totals.unchanged)
        #expect(totals.dropped > 0, "the model kept up with 30 fps, so nothing was shown")
        if sceneOutlastedACaption { #expect(totals.unchanged > 0) }
    }

    @Test func aStillSceneIsCaptionedOnce() throws {
        let example = Demo.example("single-42-4.png")
        let pipe = Pipe()
        let source = try startFFmpeg(["-loop", "1", "-i", example.path, "-frames:v", "40", "-q:v", "3", "-f", "mjpeg", "-"], output: pipe)
        let watch = try RunningCommand(blip2.url, ["watch", Demo.model, "-"], input: pipe)
        #expect(try watch.finish() == 0, "\(watch.stderr)")
        source.waitUntilExit()
        let lines = watch.stdout.split(separator: "\n")
        #expect(lines.count == 1)
        // Plain output: HH:MM:SS, the source and the frame's number in it, and the caption.
        let line = try #require(lines.first.flatMap { $0.wholeMatch(of: #/\d\d:\d\d:\d\d -#(\d+): (.*)/#) }, "\(lines)")
        let captioned = Int(line.1) ?? 0
        #expect((1...40).contains(captioned) && line.2 == example.caption, "\(lines)")
        let totals = try WatchTotals(watch.stderr)
        #expect(totals.seen == 40 && totals.captioned == 1 && totals.dropped + totals.unchanged == 39)
        // A frame after the captioned one is taken and found unchanged (the newest is never dropped), unless a
        // busy machine let the last frame arrive before the watcher took its first.
        if captioned < 40 { #expect(totals.unchanged >= 1) }
    }

    @Test func brokenAndTruncatedFramesAreSkipped() throws {
        let first = try Demo.all[0].jpeg(), second = try Demo.all[1].jpeg(), third = try Demo.all[2].jpeg()
        var zeroHeight = second
        let sof = try #require(zeroHeight.range(of: Data([0xFF, 0xC0]))).lowerBound
        zeroHeight[sof + 5] = 0  // the frame header's height
        zeroHeight[sof + 6] = 0
        let input = Pipe()
        let watch = try RunningCommand(blip2.url, ["watch", Demo.model, "-", "--json"], input: input)
        // Each write waits until the command has dealt with the frame before it (a line, or the warning for
        // a frame it could not decode), so a slow or busy machine replaces no frame with the next. Warnings
        // come at most once a second: the zero-height frame goes once that second has passed since frame 2's.
        let writes: [(Data, String, (RunningCommand) -> Bool)] = [
            (first, "the first caption", { $0.jsonLines.count == 1 }),
            (first.prefix(first.count / 2) + second, "the second caption", { $0.jsonLines.count == 2 && $0.stderr.contains("frame 2") }),
            (Data("noise between frames".utf8), "", { _ in true }),
            (zeroHeight, "the zero-height frame's warning", { $0.stderr.contains("frame 4") }),
            (third, "the third caption", { $0.jsonLines.count == 3 }),
            (first.prefix(first.count / 2), "", { _ in true }),
        ]
        for (data, what, done) in writes {
            // The rate limit's second, measured from when frame 2's warning was seen (so from after it was sent).
            if data == zeroHeight { usleep(1_200_000) }
            try input.fileHandleForWriting.write(contentsOf: data)
            try watch.wait(what, seconds: 120, until: done)
        }
        try input.fileHandleForWriting.close()
        #expect(try watch.finish() == 0, "\(watch.stderr)")
        #expect(watch.jsonLines.compactMap { $0["text"] as? String } == [Demo.all[0].caption, Demo.all[1].caption, Demo.all[2].caption])
        let totals = try WatchTotals(watch.stderr)
        // The frame cut by the next one, the zero-height frame and the one cut by the end of the stream.
        #expect(totals.seen == 6 && totals.captioned == 3 && totals.dropped == 0 && totals.invalid == 3)
        #expect(watch.stderr.contains("warning: frame 2 skipped: the image breaks off before its end-of-image marker"), "\(watch.stderr)")
    }

    @Test func framesOverThePixelLimitAreRefusedLikeImages() throws {
        let pipe = Pipe()
        let source = try startFFmpeg(["-f", "lavfi", "-i", "testsrc=size=96x72:rate=30", "-frames:v", "10", "-q:v", "4", "-f", "mjpeg", "-"], output: pipe)
        let watch = try RunningCommand(blip2.url, ["watch", Demo.model, "-", "--max-pixels", "6911"], input: pipe)
        #expect(try watch.finish() == 0, "\(watch.stderr)")
        source.waitUntilExit()
        #expect(watch.stdout.isEmpty)
        // The message `blip2 caption` gives for such an image, after the frame's name.
        #expect(watch.stderr.contains(" skipped: the image declares 96x72 = 6912 pixels, over the limit of 6911"), "\(watch.stderr)")
        let totals = try WatchTotals(watch.stderr)
        #expect(totals.seen == 10 && totals.captioned == 0 && totals.invalid >= 1 && totals.invalid + totals.dropped == 10)
    }

    @Test func anHTTPCameraThatDropsAndComesBack() throws {
        let first = Demo.all[0], second = Demo.all[1]
        // The first connection carries ffmpeg's own multipart output (-f mpjpeg), then half a part, then drops.
        let mpjpeg = try ffmpegOutput(["-loop", "1", "-i", first.path, "-frames:v", "4", "-q:v", "2", "-f", "mpjpeg", "-"])
        let cut = try first.jpeg()
        var drops = MJPEGTestServer.Connection(head: "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=ffmpeg")
        drops.pieces = [mpjpeg, MJPEGTestServer.part(cut.prefix(cut.count / 2), boundary: "ffmpeg")]
        drops.downtime = 0.8
        var comesBack = MJPEGTestServer.Connection()
        comesBack.pieces = [MJPEGTestServer.part(try second.jpeg())]
        comesBack.repeatLast = true
        let server = try MJPEGTestServer([drops, comesBack])
        defer { server.stop() }
        let url = "http://cam:secret@127.0.0.1:\(server.port)/stream"
        let watch = try RunningCommand(blip2.url, ["watch", Demo.model, url, "--json"])
        try watch.wait("a caption from the second connection", seconds: 120) { $0.jsonLines.contains { $0["text"] as? String == second.caption } }
        kill(watch.process.processIdentifier, SIGTERM)
        #expect(try watch.finish() == 0, "\(watch.stderr)")
        let texts = watch.jsonLines.compactMap { $0["text"] as? String }
        #expect(texts.first == first.caption && texts.last == second.caption)
        let masked = "http://cam:***@127.0.0.1:\(server.port)/stream"
        #expect(watch.stderr.contains("watch: connected to \(masked) (multipart/x-mixed-replace;boundary=ffmpeg)"))
        #expect(watch.stderr.contains("watch: \(masked): the server ended the stream; reconnecting in 0.5 s"))
        #expect(watch.stderr.contains("watch: reconnected to \(masked)"))
        #expect(!watch.stderr.contains("secret"))
        let totals = try WatchTotals(watch.stderr)
        #expect(totals.ending == "stopped" && totals.invalid >= 1)  // the half part cut by the drop
        #expect(server.requests.count == 2)
        for request in server.requests {
            #expect(request.hasPrefix("GET /stream HTTP/1.1\r\n"))
            #expect(request.contains("\r\nAuthorization: Basic Y2FtOnNlY3JldA==\r\n"))  // base64 of cam:secret
        }
    }

    @Test func ffmpegAsTheHTTPServer() throws {
        let example = Demo.example("single-42-11.png")
        // A free loopback port for ffmpeg to listen on.
        let probe = try MJPEGTestServer([])
        let port = probe.port
        probe.stop()
        let server = try startFFmpeg(["-re", "-loop", "1", "-i", example.path, "-t", "120", "-q:v", "3", "-f", "mpjpeg",
                                      "-listen", "1", "http://127.0.0.1:\(port)/cam"])
        defer { if server.isRunning { kill(server.processIdentifier, SIGKILL) } }
        let watch = try RunningCommand(blip2.url, ["watch", Demo.model, "http://127.0.0.1:\(port)/cam", "--json", "--max-frames", "1"])
        #expect(try watch.finish() == 0, "\(watch.stderr)")
        #expect(watch.jsonLines.map { $0["text"] as? String } == [example.caption])
        #expect(try WatchTotals(watch.stderr).ending == "reached --max-frames")
    }

    @Test func aFolderWrittenToWhileWatching() throws {
        let scratch = Scratch()
        let folder = scratch.url.appendingPathComponent("camera")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        // There before watching starts: not captioned.
        try FileManager.default.copyItem(atPath: Demo.all[5].path, toPath: folder.appendingPathComponent("old.png").path)
        let watch = try RunningCommand(blip2.url, ["watch", Demo.model, folder.path, "--json", "--max-frames", "3"])
        try watch.wait("the folder watch to start", seconds: 120) { $0.stderr.contains("watch: watching \(folder.path)") }
        try Data("not an image".utf8).write(to: folder.appendingPathComponent("notes.txt"))

        // A PNG copied in; a JPEG written in two parts with a pause; a PNG written under a hidden name, then renamed.
        try FileManager.default.copyItem(atPath: Demo.all[0].path, toPath: folder.appendingPathComponent("a.png").path)
        try watch.wait("the first caption", seconds: 120) { $0.jsonLines.count == 1 }
        let jpeg = try Demo.all[1].jpeg()
        let partial = folder.appendingPathComponent("b.jpg")
        _ = FileManager.default.createFile(atPath: partial.path, contents: nil)
        let handle = try FileHandle(forWritingTo: partial)
        try handle.write(contentsOf: jpeg.prefix(jpeg.count / 2))
        usleep(100_000)
        try handle.write(contentsOf: jpeg.dropFirst(jpeg.count / 2))
        try handle.close()
        try watch.wait("the second caption", seconds: 120) { $0.jsonLines.count == 2 }
        try FileManager.default.copyItem(atPath: Demo.all[2].path, toPath: folder.appendingPathComponent(".c.png").path)
        try FileManager.default.moveItem(atPath: folder.appendingPathComponent(".c.png").path, toPath: folder.appendingPathComponent("c.png").path)

        #expect(try watch.finish() == 0, "\(watch.stderr)")
        #expect(watch.jsonLines.compactMap { $0["text"] as? String } == Demo.all[0...2].map(\.caption))
        #expect(watch.jsonLines.compactMap { $0["source"] as? String } == ["a.png", "b.jpg", "c.png"].map { folder.appendingPathComponent($0).path },
                "a folder's records name the file")
        let totals = try WatchTotals(watch.stderr)
        #expect(totals == WatchTotals(seen: 3, captioned: 3, dropped: 0, unchanged: 0, invalid: 0, ending: "reached --max-frames"))
    }

    @Test(arguments: [SIGTERM, SIGINT])
    func aSignalFinishesTheLineAndExitsZero(_ signalNumber: Int32) throws {
        let jpegs = try Demo.all.prefix(3).map { try $0.jpeg() }
        let input = Pipe()
        let watch = try RunningCommand(blip2.url, ["watch", Demo.model, "-", "--json", "--ask", "how many objects are there?"], input: input)
        let feeder = Thread {
            // A camera that never stops: a new scene every 30 ms, until the command has gone.
            for index in 0..<2000 {
                guard (try? input.fileHandleForWriting.write(contentsOf: jpegs[index % jpegs.count])) != nil else { return }
                usleep(30_000)
            }
        }
        feeder.start()
        try watch.wait("two captions", seconds: 120) { $0.jsonLines.count >= 2 }
        kill(watch.process.processIdentifier, signalNumber)
        #expect(try watch.finish() == 0, "\(watch.stderr)")
        try? input.fileHandleForWriting.close()
        #expect(watch.stdout.hasSuffix("\n"))
        #expect(watch.jsonLines.count == watch.stdout.split(separator: "\n").count)  // every line whole
        #expect(try WatchTotals(watch.stderr).ending == "stopped")
    }

    /// A recorded file with --every-frame: every frame captioned, in order, none dropped, each record naming
    /// the file and the frame; the demo examples in turn, so each caption is checked against its scene.
    @Test func everyFrameOfARecording() throws {
        let scratch = Scratch()
        let recording = scratch.path("recording.mjpeg")
        var bytes = Data()
        for example in Demo.all { bytes += try example.jpeg() + example.jpeg() }
        try bytes.write(to: URL(fileURLWithPath: recording))
        let watch = try RunningCommand(blip2.url, ["watch", Demo.model, recording, "--every-frame", "--min-change", "0", "--json"])
        #expect(try watch.finish() == 0, "\(watch.stderr)")
        let lines = watch.jsonLines
        #expect(lines.compactMap { $0["frame"] as? Int } == Array(1...(2 * Demo.all.count)), "\(watch.stdout)")
        #expect(lines.compactMap { $0["text"] as? String } == Demo.all.flatMap { [$0.caption, $0.caption] })
        #expect(lines.allSatisfy { $0["source"] as? String == recording })
        let totals = try WatchTotals(watch.stderr)
        #expect(totals.seen == 2 * Demo.all.count && totals.captioned == totals.seen && totals.dropped == 0)
    }

    /// Input with no JPEG frame at all is not a camera: exit 1, what it was, and the command for a still image.
    @Test func aStreamWithoutOneFrameFails() throws {
        var noise = Data(count: 100_000)
        var generator = SystemRandomNumberGenerator()
        for i in noise.indices { noise[i] = UInt8.random(in: 0...255, using: &generator) & 0xFE }   // never 0xFF: no marker
        for (data, message) in [(try Data(contentsOf: URL(fileURLWithPath: Demo.all[0].path)), "standard input: a PNG image, not a Motion-JPEG stream"),
                                (noise, "standard input: no JPEG image in its 100000 bytes, not a Motion-JPEG stream")] {
            let input = Pipe()
            let watch = try RunningCommand(blip2.url, ["watch", Demo.model, "-"], input: input)
            try input.fileHandleForWriting.write(contentsOf: data)
            try input.fileHandleForWriting.close()
            #expect(try watch.finish() == 1, "\(watch.stderr)")
            #expect(watch.stderr.contains("error: \(message); to caption one picture: blip2 caption MODEL"), "\(watch.stderr)")
            #expect(watch.stdout.isEmpty)
        }
    }

    @Test func badSourcesAndOptionsAreRefused() throws {
        let scratch = Scratch()
        let notFound = MJPEGTestServer.Connection(head: "HTTP/1.1 404 Not Found\r\nContent-Length: 0")
        let webPage = MJPEGTestServer.Connection(head: "HTTP/1.1 200 OK\r\nContent-Type: text/html", pieces: [Data("<html>".utf8)])
        let server = try MJPEGTestServer([notFound, webPage])
        defer { server.stop() }
        try Data().write(to: URL(fileURLWithPath: scratch.path("file")))
        let cases: [([String], Int32, String)] = [
            ([scratch.path("missing")], 1, "\(scratch.path("missing")): no such file or folder"),
            (["https://camera/stream"], 1, "https is not supported"),
            (["rtsp://camera/stream"], 1, "only http:// URLs"),
            (["http://cam:99999/"], 1, "the port must be a number"),
            ([server.url + "/missing"], 1, "\(server.url)/missing: the server answered 404 Not Found"),
            ([server.url + "/page"], 1, "the server sent text/html, not an MJPEG stream"),
            (["-", "--output", scratch.path("no/such/folder/out.jsonl")], 1, "--output \(scratch.path("no/such/folder/out.jsonl")): cannot create"),
            (["-", "--save-frames", scratch.path("file")], 1, "--save-frames \(scratch.path("file")): not a folder"),
            ([Demo.all[0].path], 1, "\(Demo.all[0].path): a PNG image, not a Motion-JPEG stream; to caption one picture: blip2 caption MODEL \(Demo.all[0].path)"),
            (["-", "--min-change", "2"], 64, "error: --min-change 2: it must be between 0 and 1"),
            (["-", "--every=-1"], 64, "error: --every -1: it must be 0 or more seconds"),
            (["-", "--max-frames", "0"], 64, "error: --max-frames 0: it must be at least 1"),
            (["-", "--ask", " "], 64, "--ask needs a question"),
        ]
        for (arguments, status, message) in cases {
            let result = try RunningCommand(blip2.url, ["watch", Demo.model] + arguments)
            #expect(try result.finish() == status, "\(arguments): \(result.stderr)")
            #expect(result.stderr.contains(message), "\(arguments): \(result.stderr)")
            #expect(result.stdout.isEmpty)
        }
        #expect(!FileManager.default.fileExists(atPath: scratch.path("no")))
    }
}
