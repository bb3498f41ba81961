import Foundation
import Testing
@testable import Blip2ModelFile

/// Runs one of the package's executables from the build folder.
struct Executable {
    let name: String
    var url: URL {
        // The test bundle sits beside the built products.
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: dir.appendingPathComponent(name).path), dir.path != "/" {
            dir = dir.deletingLastPathComponent()
        }
        return dir.appendingPathComponent(name)
    }

    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    /// Runs to completion with `input` on standard input (empty when nil), killed after `timeout` seconds.
    /// A child that exits before reading all its input must not take the test process down with SIGPIPE.
    private static let pipeSignalIgnored: Void = { signal(SIGPIPE, SIG_IGN) }()

    func run(_ arguments: [String], input: Data? = nil, in directory: URL? = nil, timeout: Double = 300) throws -> Result {
        Self.pipeSignalIgnored
        let process = Process()
        process.executableURL = url
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = directory }
        let out = Pipe(), err = Pipe(), stdin = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = stdin
        try process.run()
        let watchdog = DispatchWorkItem { if process.isRunning { process.terminate() } }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: watchdog)
        defer { watchdog.cancel() }
        // Standard error is drained on another thread so neither pipe can fill and stall the child.
        nonisolated(unsafe) var stderr = Data()
        let drained = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            stderr = err.fileHandleForReading.readDataToEndOfFile()
            drained.signal()
        }
        DispatchQueue.global().async {
            if let input { try? stdin.fileHandleForWriting.write(contentsOf: input) }
            try? stdin.fileHandleForWriting.close()
        }
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        drained.wait()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                      stderr: String(decoding: stderr, as: UTF8.self))
    }
}

let quantize = Executable(name: "blip2-quantize")
let blip2 = Executable(name: "blip2")

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let fixtureModels = packageRoot.appendingPathComponent("Tests/Fixtures/models")

final class Scratch {
    let url: URL
    init() {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("blip2-cli-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(at: url) }
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
    var contents: [String] { ((try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []).sorted() }
}

@Suite struct CLIHelpTests {
    @Test func helpIsEverywhere() throws {
        for (tool, args) in [(quantize, ["--help"]), (blip2, ["--help"]), (blip2, ["inspect", "--help"])] {
            let result = try tool.run(args)
            #expect(result.status == 0)
            #expect(result.stdout.contains("USAGE"))
        }
    }

    @Test func badArgumentsAreUsageErrors() throws {
        let scratch = Scratch()
        for args in [["x", "--output", scratch.path("o"), "--weights", "q3"], ["x", "--output", scratch.path("o"), "--compress", "lz4"],
                     ["x", "--output", scratch.path("o"), "--override", "nothing"], ["x", "--output", scratch.path("o"), "--override", "a=q5"], ["x"]] {
            let result = try quantize.run(args)
            #expect(result.status == 64, "\(args): \(result.stderr)")
            #expect(result.stderr.hasPrefix("error: "), "\(args): \(result.stderr)")
        }
        #expect(scratch.contents.isEmpty)
    }

    @Test func inspectRefusesWhatIsNotAModel() throws {
        let scratch = Scratch()
        try Data("not a model".utf8).write(to: URL(fileURLWithPath: scratch.path("x.blip2")))
        for path in [scratch.path("x.blip2"), scratch.path("missing.blip2")] {
            let result = try blip2.run(["inspect", path])
            #expect(result.status == 1)
            #expect(result.stderr.contains(path))
            #expect(result.stdout.isEmpty)
        }
    }
}

@Suite struct QuantizeAndInspectTests {
    @Test func convertThenInspectAsJSON() throws {
        let scratch = Scratch()
        let output = scratch.path("tiny.blip2")
        let checkpoint = fixtureModels.appendingPathComponent("sharded-untied-f32/checkpoint").path
        let convert = try quantize.run([checkpoint, "--output", output, "--weights", "q4", "--compress", "zstd", "--json"])
        #expect(convert.status == 0, "\(convert.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(convert.stdout.utf8)) as! [String: Any]
        #expect(report["weights"] as? String == "q4")
        #expect((report["tensors"] as? [[String: Any]])?.isEmpty == false)
        let totals = report["totals"] as! [String: [String: Any]]
        #expect(Set(totals.keys) == ["vision", "qformer", "language", "total"])
        let parameters = (report["tensors"] as! [[String: Any]]).reduce(0) { $0 + ($1["shape"] as! [Int]).reduce(1, *) }
        #expect(totals["total"]?["parameters"] as? Int == parameters)

        let inspect = try blip2.run(["inspect", output, "--json", "--verify"])
        #expect(inspect.status == 0, "\(inspect.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as! [String: Any]
        #expect(object["format_version"] as? Int == 2, "q4 linear weights are panels, which format version 2 added")
        let tensors = object["tensors"] as! [[String: Any]]
        let expected = try JSONSerialization.jsonObject(with: Data(contentsOf: fixtureModels.appendingPathComponent("sharded-untied-f32/tensors.json"))) as! [String: Any]
        let shapes = Dictionary(uniqueKeysWithValues: (expected["tensors"] as! [[String: Any]]).map { ($0["name"] as! String, $0["shape"] as! [Int]) })
        #expect(tensors.count == shapes.count)
        for tensor in tensors {
            let name = tensor["name"] as! String
            #expect(tensor["shape"] as? [Int] == shapes[name], "\(name)")
            for key in ["type", "bytes", "stored_bytes", "compression", "error"] { #expect(tensor[key] != nil, "\(name) lacks \(key)") }
            #expect(tensor["compression"] as? String == "zstd")
        }
        #expect((object["verify"] as? [String: Any])?["failures"] as? [String] == [])

        let human = try blip2.run(["inspect", output, "--tensors"])
        #expect(human.status == 0)
        #expect(human.stdout.contains("format      version 2"))
        #expect(human.stdout.contains("language_model.model.decoder.layers.0.fc1.weight"))
    }

    @Test func verifyFailsOnACorruptTensor() throws {
        let scratch = Scratch()
        let output = scratch.path("tiny.blip2")
        let checkpoint = fixtureModels.appendingPathComponent("base-f32/checkpoint").path
        #expect(try quantize.run([checkpoint, "--output", output, "--weights", "f32"]).status == 0)
        let file = try ModelFile(path: output)
        let record = file.tensors[0]
        var bytes = Array(try Data(contentsOf: URL(fileURLWithPath: output)))
        bytes[record.offset] ^= 0xff
        try Data(bytes).write(to: URL(fileURLWithPath: output))
        let result = try blip2.run(["inspect", output, "--verify"])
        #expect(result.status == 1)
        #expect(result.stderr.contains(record.name))
    }

    @Test func brokenCheckpointLeavesNoOutput() throws {
        let scratch = Scratch()
        let folder = scratch.url.appendingPathComponent("ckpt")
        try FileManager.default.copyItem(at: fixtureModels.appendingPathComponent("base-f32/checkpoint"), to: folder)
        let weights = folder.appendingPathComponent("model.safetensors")
        let data = try Data(contentsOf: weights)
        try data.prefix(data.count / 2).write(to: weights)
        let output = scratch.path("out.blip2")
        let result = try quantize.run([folder.path, "--output", output])
        #expect(result.status == 1)
        #expect(result.stderr.contains("model.safetensors"))
        #expect(result.stdout.isEmpty)
        #expect(scratch.contents == ["ckpt"])
    }
}

/// caption / ask / chat / preprocess / tokenize / detokenize on a converted fixture.
@Suite struct RuntimeCommandTests {
    static func model(_ scratch: Scratch, _ fixture: String = "base-f32") throws -> String {
        let output = scratch.path("\(fixture).blip2")
        let result = try quantize.run([fixtureModels.appendingPathComponent("\(fixture)/checkpoint").path, "--output", output, "--weights", "f32"])
        #expect(result.status == 0, "\(result.stderr)")
        return output
    }
    static let image = fixtureModels.appendingPathComponent("images/circle.png").path

    struct Reference: Decodable {
        struct Generation: Decodable { let name: String; let new_ids_trimmed: [[Int]]; let text: [String]; let walkthrough_decode: [String] }
        struct Task: Decodable { let prompt: String?; let prompt_ids: [Int]; let generations: [Generation] }
        let tasks: [String: Task]
    }
    static func reference(_ fixture: String = "base-f32") throws -> Reference {
        try JSONDecoder().decode(Reference.self, from: Data(contentsOf: fixtureModels.appendingPathComponent("\(fixture)/reference/reference.json")))
    }

    @Test func captionAskAndChatAsJSON() throws {
        let scratch = Scratch()
        let model = try Self.model(scratch)
        let reference = try Self.reference()
        let caption = try blip2.run(["caption", model, Self.image, "--json"])
        #expect(caption.status == 0, "\(caption.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(caption.stdout.utf8)) as! [String: Any]
        let greedy = reference.tasks["caption"]!.generations.first { $0.name == "greedy" }!
        #expect(object["token_ids"] as? [Int] == greedy.new_ids_trimmed[0])
        #expect(object["text"] as? String == greedy.text[0])
        #expect(object["prompt_ids"] as? [Int] == reference.tasks["caption"]!.prompt_ids)
        #expect((object["timings_ms"] as? [String: Double])?["vision"] != nil)

        let plain = try blip2.run(["caption", model, Self.image])
        #expect(plain.stdout == greedy.text[0] + "\n")

        let ask = try blip2.run(["ask", model, Self.image, "what color is the circle?", "--json", "--beams", "3"])
        #expect(ask.status == 0, "\(ask.stderr)")
        let answer = try JSONSerialization.jsonObject(with: Data(ask.stdout.utf8)) as! [String: Any]
        let beam = reference.tasks["vqa"]!.generations.first { $0.name == "beam3" }!
        #expect(answer["token_ids"] as? [Int] == beam.new_ids_trimmed[0])
        #expect(answer["prompt_ids"] as? [Int] == reference.tasks["vqa"]!.prompt_ids)

        let chat = Process()
        chat.executableURL = blip2.url
        chat.arguments = ["chat", model, Self.image, "--json"]
        let input = Pipe(), output = Pipe()
        chat.standardInput = input
        chat.standardOutput = output
        chat.standardError = Pipe()
        try chat.run()
        input.fileHandleForWriting.write(Data("what is in the picture?\n\nwhat color is the background?\n".utf8))
        input.fileHandleForWriting.closeFile()
        let lines = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).split(separator: "\n")
        chat.waitUntilExit()
        #expect(chat.terminationStatus == 0)
        // One record per input line: the blank one gets an empty answer and is no turn of the conversation.
        try #require(lines.count == 3)
        let first = try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as! [String: Any]
        let blank = try JSONSerialization.jsonObject(with: Data(lines[1].utf8)) as! [String: Any]
        #expect(blank["question"] as? String == "" && blank["text"] as? String == "" && blank["task"] as? String == "chat", "\(blank)")
        let second = try JSONSerialization.jsonObject(with: Data(lines[2].utf8)) as! [String: Any]
        let firstIds = first["prompt_ids"] as! [Int], secondIds = second["prompt_ids"] as! [Int]
        #expect(second["question"] as? String == "what color is the background?")
        #expect(Array(secondIds.prefix(firstIds.count)) == firstIds, "the second prompt starts with the first turn")
        #expect((second["reused_prompt_ids"] as? Int ?? 0) >= firstIds.count, "the KV cache of the first turn was reused")
    }

    @Test func dumpLogitsWritesTheStepLogits() throws {
        let scratch = Scratch()
        let model = try Self.model(scratch)
        let path = scratch.path("logits.npy")
        let result = try blip2.run(["caption", model, Self.image, "--dump-logits", path])
        #expect(result.status == 0, "\(result.stderr)")
        let header = try Data(contentsOf: URL(fileURLWithPath: path)).prefix(128)
        #expect(String(decoding: header, as: UTF8.self).contains("'shape': (8, 576)"))
    }

    @Test func preprocessTokenizeDetokenize() throws {
        let scratch = Scratch()
        let model = try Self.model(scratch)
        let pixels = scratch.path("p.npy")
        #expect(try blip2.run(["preprocess", model, Self.image, "--output", pixels]).status == 0)
        let reference = try Data(contentsOf: fixtureModels.appendingPathComponent("base-f32/reference/pixel_values_circle.npy"))
        let ours = try Data(contentsOf: URL(fileURLWithPath: pixels))
        #expect(ours.suffix(3 * 28 * 28 * 4) == reference.suffix(3 * 28 * 28 * 4))

        let vqa = try Self.reference().tasks["vqa"]!
        let tokens = try blip2.run(["tokenize", model, "Question: what color is the circle? Answer:"])
        #expect(tokens.stdout == vqa.prompt_ids.map(String.init).joined(separator: " ") + "\n")
        let text = try blip2.run(["detokenize", model] + vqa.prompt_ids.map(String.init))
        #expect(text.stdout == "Question: what color is the circle? Answer:\n")
    }

    @Test func badInputsAreClearErrors() throws {
        let scratch = Scratch()
        let model = try Self.model(scratch)
        let corrupt = scratch.path("corrupt.jpg")
        try Data([0xFF, 0xD8, 0xFF, 0xE0, 0, 16, 1, 2, 3]).write(to: URL(fileURLWithPath: corrupt))
        let cases: [([String], String)] = [
            (["caption", model, scratch.path("missing.png")], "missing.png"),
            (["caption", model, corrupt], "corrupt.jpg"),
            (["caption", Self.image, Self.image], "not a blip2 model file"),
            (["caption", model, Self.image, "--max-pixels", "100"], "pixels"),
        ]
        for (args, needle) in cases {
            let result = try blip2.run(args)
            #expect(result.status == 1, "\(args.prefix(2)): \(result.stderr)")
            #expect(result.stderr.contains(needle), "\(args.prefix(2)): \(result.stderr)")
        }
        let usage = try blip2.run(["caption", model, Self.image, "--beams", "0"])
        #expect(usage.status == 64)
        // A prompt that leaves no room in the context is the token limit's usage error too.
        let long = try blip2.run(["ask", model, Self.image, String(repeating: "why ", count: 400)])
        #expect(long.status == 64 && long.stderr.contains("and not one new token fits the"), "\(long.stderr)")
        let preprocess = try blip2.run(["preprocess", model, corrupt, "--output", scratch.path("p.npy")])
        #expect(preprocess.status == 1)
        #expect(!FileManager.default.fileExists(atPath: scratch.path("p.npy")))
    }
}
