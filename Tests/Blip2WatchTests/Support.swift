import Foundation
import Testing

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let demoModel = packageRoot.appendingPathComponent("Models/demo-q8.blip2").path
let examplesFolder = packageRoot.appendingPathComponent("Models/examples")
let imageFixtures = packageRoot.appendingPathComponent("Tests/Fixtures/images")

/// Runs Debian's ffmpeg (`.ci/run` installs it) and returns its standard output; its failure fails the test.
func ffmpeg(_ arguments: [String]) throws -> Data {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin"] + arguments
    let output = Pipe(), errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw TestFailure("ffmpeg \(arguments.joined(separator: " ")) failed (\(process.terminationStatus)): \(message)")
    }
    return data
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A temporary folder removed with the value.
final class TemporaryFolder {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("blip2-watch-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(at: url) }
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
}

/// Models/examples/examples.json: each example image with its scene's layout and caption (Tools/scenes.py).
struct DemoExamples: Decodable {
    struct Example: Decodable {
        let file: String
        let layout: String
        let caption: String

        /// The answer to "how many objects are there?": Tools/scenes.py draws 1, 2, 2 or 3 objects for
        /// these layouts and answers with these words.
        var objectCount: String { ["single": "one", "horizontal": "two", "vertical": "two", "row": "three"][layout]! }
    }
    let examples: [Example]

    static let loaded: DemoExamples = try! JSONDecoder().decode(
        DemoExamples.self, from: Data(contentsOf: examplesFolder.appendingPathComponent("examples.json")))

    /// Each example as a JPEG made by ffmpeg at high quality (the demo model captions these as the PNGs).
    static let jpegs: [Data] = loaded.examples.map { example in
        try! ffmpeg(["-i", examplesFolder.appendingPathComponent(example.file).path, "-q:v", "2", "-f", "mjpeg", "-"])
    }
}

/// A deterministic generator for hostile inputs (SplitMix64).
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
