import Blip2Core
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

// Hostile inputs against the built tools: each crafted file is made here, from the demo model or a
// fixture checkpoint, by editing one field and (for model files) recomputing the checksums the way
// docs/FORMAT.md specifies them. Every one must end in exit status 1, a message naming the file and the
// field, nothing on standard output and nothing left behind. How fast a refusal comes is not checked here
// (a loaded machine would make any limit a guess); a tool that hangs is killed after `hangGuard`.

let demoModel = packageRoot.appendingPathComponent("Models/demo-q8.blip2")
/// Seconds after which a tool is taken to hang (a FIFO opened for reading, a loop that never ends): only an
/// infinite wait gets near it; a refusal or a demo-model caption takes well under a second.
let hangGuard: TimeInterval = 300
let demoImage = packageRoot.appendingPathComponent("Models/examples/single-42-4.png").path

extension Executable {
    /// Runs with a deadline: a tool that hangs is killed and reported, instead of hanging the suite.
    func run(_ arguments: [String], timeout: TimeInterval) throws -> Result {
        let process = Process()
        process.executableURL = url
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        nonisolated(unsafe) var stdout = Data(), stderr = Data()
        let readers = DispatchGroup()
        DispatchQueue.global().async(group: readers) { stdout = out.fileHandleForReading.readDataToEndOfFile() }
        DispatchQueue.global().async(group: readers) { stderr = err.fileHandleForReading.readDataToEndOfFile() }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning, Date() < deadline { usleep(10_000) }
        let timedOut = process.isRunning
        if timedOut { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        readers.wait()
        return Result(status: timedOut ? -1 : process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                      stderr: (timedOut ? "TIMED OUT after \(timeout) s\n" : "") + String(decoding: stderr, as: UTF8.self))
    }
}

/// A model file edited as docs/FORMAT.md lays it out: header fields at fixed offsets, metadata sections
/// at the end, CRC-32C over the directory, the metadata and header bytes 0..<124.
struct ModelFileBytes {
    var bytes: [UInt8]

    init(contentsOf url: URL) throws { bytes = Array(try Data(contentsOf: url)) }

    func u64(at offset: Int) -> Int { (0..<8).reduce(0) { $0 | Int(bytes[offset + $1]) << (8 * $1) } }
    mutating func put(u32 value: UInt32, at offset: Int) { for i in 0..<4 { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) } }
    mutating func put(u64 value: Int, at offset: Int) { for i in 0..<8 { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) } }

    var metadataOffset: Int { u64(at: 56) }

    /// (name, JSON) of every metadata section.
    var sections: [(String, [UInt8])] {
        var position = metadataOffset
        func take(_ n: Int) -> ArraySlice<UInt8> { defer { position += n }; return bytes[position..<(position + n)] }
        let count = take(4).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        return (0..<count).map { _ in
            let nameLength = take(2).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
            let name = String(decoding: take(nameLength), as: UTF8.self)
            let length = take(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
            return (name, Array(take(length)))
        }
    }

    /// Replaces the metadata (the last region) and fixes its size, the file size and the checksums.
    mutating func setSections(_ sections: [(String, [UInt8])]) {
        var region: [UInt8] = []
        func append(_ value: Int, _ width: Int) { for i in 0..<width { region.append(UInt8(truncatingIfNeeded: value >> (8 * i))) } }
        append(sections.count, 4)
        for (name, json) in sections {
            append(name.utf8.count, 2)
            region += Array(name.utf8)
            append(json.count, 8)
            region += json
        }
        bytes = Array(bytes[0..<metadataOffset]) + region
        put(u64: region.count, at: 64)
        put(u64: bytes.count, at: 16)
        put(u32: crc32c(region), at: 80)
        fixHeaderChecksum()
    }

    mutating func fixHeaderChecksum() { put(u32: crc32c(Array(bytes[0..<124])), at: 124) }

    /// Sets the JSON value at `path` in one section (`value` nil deletes the key).
    mutating func edit(_ section: String, _ path: [String], _ value: Any?) throws {
        var edited = sections
        let index = try #require(edited.firstIndex { $0.0 == section })
        var object = try #require(try JSONSerialization.jsonObject(with: Data(edited[index].1)) as? [String: Any])
        func set(_ node: [String: Any], _ keys: ArraySlice<String>) -> [String: Any] {
            var node = node
            if keys.count == 1 { node[keys.first!] = value } else {
                node[keys.first!] = set(node[keys.first!] as? [String: Any] ?? [:], keys.dropFirst())
            }
            return node
        }
        object = set(object, path[...])
        edited[index].1 = Array(try JSONSerialization.data(withJSONObject: object))
        setSections(edited)
    }

    func write(to path: String) throws { try Data(bytes).write(to: URL(fileURLWithPath: path)) }
}

/// A checkpoint folder copied from a fixture, with its one model.safetensors edited in place.
struct CheckpointCopy {
    let folder: URL
    init(_ scratch: Scratch, fixture: String = "base-f32") throws {
        folder = scratch.url.appendingPathComponent("ckpt")
        try FileManager.default.copyItem(at: fixtureModels.appendingPathComponent("\(fixture)/checkpoint"), to: folder)
    }
    var path: String { folder.path }
    var weights: URL { folder.appendingPathComponent("model.safetensors") }

    /// Sets element `index` of an F32 tensor (located through the safetensors header).
    func setF32(_ tensor: String, index: Int = 0, to value: Float) throws {
        var bytes = Array(try Data(contentsOf: weights))
        let headerLength = (0..<8).reduce(0) { $0 | Int(bytes[$1]) << (8 * $1) }
        let header = try #require(try JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + headerLength)])) as? [String: Any])
        let entry = try #require(header[tensor] as? [String: Any], "no tensor \(tensor)")
        #expect(entry["dtype"] as? String == "F32")
        let begin = try #require((entry["data_offsets"] as? [Int])?.first)
        let offset = 8 + headerLength + begin + 4 * index
        withUnsafeBytes(of: value.bitPattern.littleEndian) { for i in 0..<4 { bytes[offset + i] = $0[i] } }
        try Data(bytes).write(to: weights)
    }

    func editJSON(_ file: String, _ path: [String], _ value: Any) throws {
        let url = folder.appendingPathComponent(file)
        var object = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        if path.count == 1 { object[path[0]] = value } else {
            var inner = object[path[0]] as? [String: Any] ?? [:]
            inner[path[1]] = value
            object[path[0]] = inner
        }
        try JSONSerialization.data(withJSONObject: object).write(to: url)
    }
}

/// Exit 1, the needles (file and field) in the message, nothing on standard output.
func expectRefusal(_ result: Executable.Result, _ needles: [String], _ context: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(result.status == 1, "\(context): status \(result.status): \(result.stderr)", sourceLocation: sourceLocation)
    for needle in needles {
        #expect(result.stderr.contains(needle), "\(context): \(result.stderr) lacks '\(needle)'", sourceLocation: sourceLocation)
    }
    #expect(result.stdout.isEmpty, "\(context): printed \(result.stdout)", sourceLocation: sourceLocation)
    #expect(!result.stderr.contains("Fatal error") && !result.stderr.contains("crashed"), "\(context): \(result.stderr)", sourceLocation: sourceLocation)
}

@Suite struct HostileModelFileTests {
    /// Cases 1-5 and 11 (text model_type): a config value edited, checksums fixed; every command that
    /// reads the file refuses it by name, quickly.
    @Test(arguments: [
        (["vision_config", "num_hidden_layers"], -1 as any Sendable, "vision_config.num_hidden_layers"),
        (["qformer_config", "num_hidden_layers"], -1, "qformer_config.num_hidden_layers"),
        (["text_config", "num_hidden_layers"], -1, "text_config.num_hidden_layers"),
        (["vision_config", "patch_size"], 0, "vision_config.patch_size"),
        (["qformer_config", "cross_attention_frequency"], 0, "qformer_config.cross_attention_frequency"),
        (["vision_config", "image_size"], 1_000_000_000_000, "vision_config.image_size"),
        (["text_config", "num_hidden_layers"], 1_000_000_000_000, "text_config.num_hidden_layers"),
        (["qformer_config", "num_hidden_layers"], 1_000_000_000_000, "qformer_config.num_hidden_layers"),
        (["text_config", "model_type"], "llama", "text_config.model_type"),
        (["vision_config", "num_hidden_layers"], 2.5, "vision_config.num_hidden_layers must be an integer"),
        (["vision_config", "patch_size"], 1, "operations"),
        (["num_query_tokens"], 0, "num_query_tokens"),
        (["text_config", "eos_token_id"], 1 << 40, "text_config.eos_token_id"),
        (["vision_config", "layer_norm_eps"], -1.0, "vision_config.layer_norm_eps"),
        (["qformer_config", "layer_norm_eps"], 1e-300, "qformer_config.layer_norm_eps"),
    ] as [([String], any Sendable, String)])
    func editedConfigValue(_ path: [String], _ value: any Sendable, _ field: String) throws {
        let scratch = Scratch()
        var model = try ModelFileBytes(contentsOf: demoModel)
        try model.edit("config", path, value)
        let file = scratch.path("edited.blip2")
        try model.write(to: file)
        for args in [["inspect", file], ["inspect", file, "--verify"], ["inspect", file, "--json"], ["caption", file, demoImage]] {
            let result = try blip2.run(args, timeout: hangGuard)
            expectRefusal(result, [file, field], "\(path) = \(value): \(args[0])")
        }
    }

    /// Case 6 (and friends): a preprocessor config that cannot feed the model is refused at load.
    @Test(arguments: [
        (["do_resize"], false as any Sendable, "do_resize"),
        (["size"], ["shortest_edge": 112] as any Sendable, "size"),
        (["size"], ["height": 0, "width": 0] as any Sendable, "size"),
        (["image_std"], [0, 0, 0] as any Sendable, "image_std"),
        // Sizes whose products overflow an Int: refused by field, not computed with.
        (["size"], ["shortest_edge": Int.max] as any Sendable, "size.shortest_edge"),
        (["size"], ["shortest_edge": 1 << 62, "longest_edge": (1 << 62) + 1] as any Sendable, "size.shortest_edge"),
        (["size"], ["max_height": Int.max, "max_width": Int.max - 1] as any Sendable, "size.max_height"),
    ] as [([String], any Sendable, String)])
    func editedPreprocessorConfig(_ path: [String], _ value: any Sendable, _ field: String) throws {
        let scratch = Scratch()
        var model = try ModelFileBytes(contentsOf: demoModel)
        try model.edit("preprocessor_config", path, value)
        let file = scratch.path("edited.blip2")
        try model.write(to: file)
        for args in [["caption", file, demoImage], ["preprocess", file, demoImage, "--output", scratch.path("p.npy")]] {
            expectRefusal(try blip2.run(args, timeout: hangGuard), [file, field], "\(path): \(args[0])")
        }
        #expect(scratch.contents == ["edited.blip2"])
    }

    /// Case 11: header fields the reader used to tolerate.
    @Test(arguments: [(84, UInt32(0), "page_alignment"), (84, UInt32.max, "page_alignment"), (84, UInt32(12_345), "page_alignment"),
                      (88, UInt32(1), "reserved"), (120, UInt32(0x100), "reserved")])
    func editedHeaderField(_ offset: Int, _ value: UInt32, _ field: String) throws {
        let scratch = Scratch()
        var model = try ModelFileBytes(contentsOf: demoModel)
        model.put(u32: value, at: offset)
        model.fixHeaderChecksum()
        let file = scratch.path("edited.blip2")
        try model.write(to: file)
        for args in [["inspect", file], ["caption", file, demoImage]] {
            expectRefusal(try blip2.run(args, timeout: hangGuard), [file, field], "header @\(offset) = \(value)")
        }
    }

    @Test func editsKeepAValidFileValid() throws {
        // The editor itself: re-encoding the untouched sections must give a file the tools accept.
        let scratch = Scratch()
        var model = try ModelFileBytes(contentsOf: demoModel)
        model.setSections(model.sections)
        let file = scratch.path("same.blip2")
        try model.write(to: file)
        #expect(try Data(contentsOf: URL(fileURLWithPath: file)) == Data(contentsOf: demoModel))
        try model.edit("config", ["text_config", "num_attention_heads"], 2)
        try model.write(to: file)
        let result = try blip2.run(["caption", file, demoImage], timeout: hangGuard)
        #expect(result.status == 0, "\(result.stderr)")
    }
}

@Suite struct HostileFileKindTests {
    /// Case 7: FIFOs, directories and devices are refused without blocking, wherever a file is read.
    @Test func specialFilesAreRefusedWithoutBlocking() throws {
        let scratch = Scratch()
        let fifo = scratch.path("fifo")
        #expect(mkfifo(fifo, 0o600) == 0)
        let folder = scratch.path("folder.blip2")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let cases: [([String], [String])] = [
            (["inspect", fifo], [fifo, "FIFO"]),
            (["inspect", folder], [folder, "directory"]),
            (["inspect", "/dev/zero"], ["/dev/zero", "device"]),
            (["caption", fifo, demoImage], [fifo, "FIFO"]),
            (["caption", demoModel.path, fifo], [fifo, "FIFO"]),
            (["caption", demoModel.path, folder], [folder, "directory"]),
            (["caption", demoModel.path, "/dev/zero"], ["/dev/zero", "device"]),
        ]
        for (args, needles) in cases {
            expectRefusal(try blip2.run(args, timeout: hangGuard), needles, "\(args)")
        }
        let checkpoint = try CheckpointCopy(scratch)
        let config = checkpoint.folder.appendingPathComponent("config.json").path
        try FileManager.default.removeItem(atPath: config)
        #expect(mkfifo(config, 0o600) == 0)
        let result = try quantize.run([checkpoint.path, "--output", scratch.path("out.blip2")], timeout: hangGuard)
        expectRefusal(result, [config, "FIFO"], "FIFO config.json")
        #expect(!scratch.contents.contains("out.blip2"))
    }
}

@Suite struct HostileCheckpointTests {
    static func convert(_ checkpoint: CheckpointCopy, _ scratch: Scratch, _ extra: [String] = []) throws -> Executable.Result {
        try quantize.run([checkpoint.path, "--output", scratch.path("out.blip2")] + extra, timeout: hangGuard)
    }

    /// Case 8: NaN, infinite and absurd weights are refused with the tensor's name, in f32-stored tensors
    /// (norms) and in quantized ones, and nothing is written.
    @Test(arguments: [
        ("vision_model.post_layernorm.weight", Float.nan, "f32"),
        ("query_tokens", Float.infinity, "q8"),
        ("language_model.model.decoder.layers.0.fc1.weight", -Float.infinity, "q8"),
        ("language_model.model.decoder.layers.0.fc1.weight", Float.nan, "q4"),
        ("vision_model.encoder.layers.0.mlp.fc2.weight", 3e38, "q8"),
        ("vision_model.encoder.layers.0.mlp.fc2.weight", 3e38, "f32"),
        ("language_model.model.decoder.embed_tokens.weight", 70_000, "f16"),
    ] as [(String, Float, String)])
    func unusableWeight(_ tensor: String, _ value: Float, _ weights: String) throws {
        let scratch = Scratch()
        let checkpoint = try CheckpointCopy(scratch)
        try checkpoint.setF32(tensor, index: 5, to: value)
        for json in [[], ["--json"]] {
            let result = try Self.convert(checkpoint, scratch, ["--weights", weights] + json)
            expectRefusal(result, ["model.safetensors", tensor, "element 5"], "\(tensor) = \(value) as \(weights)")
            #expect(!result.stderr.contains("EncodingError"))
        }
        #expect(scratch.contents == ["ckpt"])
    }

    /// Case 8 (end) and 9: configs the runtime would refuse for every image, and unreadable values,
    /// are refused at conversion with the file and the field.
    @Test(arguments: [
        ("preprocessor_config.json", ["size"], ["height": 0, "width": 0] as any Sendable, "size"),
        ("preprocessor_config.json", ["image_std"], [0, 0, 0] as any Sendable, "image_std"),
        ("preprocessor_config.json", ["image_std"], [1e-300, 1e-300, 1e-300] as any Sendable, "image_std"),
        ("preprocessor_config.json", ["do_resize"], false as any Sendable, "do_resize"),
        ("preprocessor_config.json", ["size"], ["height": 14, "width": 14] as any Sendable, "28x28"),
        ("preprocessor_config.json", ["size"], ["shortest_edge": Int.max] as any Sendable, "size.shortest_edge"),
        ("preprocessor_config.json", ["size"], ["shortest_edge": 1 << 62, "longest_edge": (1 << 62) + 1] as any Sendable, "size.shortest_edge"),
        ("preprocessor_config.json", ["size"], ["max_height": Int.max, "max_width": Int.max - 1] as any Sendable, "size.max_height"),
        ("config.json", ["vision_config", "num_hidden_layers"], 1_000_000_000_000 as any Sendable, "vision_config.num_hidden_layers"),
        ("config.json", ["text_config", "num_hidden_layers"], 1.5 as any Sendable, "text_config.num_hidden_layers must be an integer"),
        ("config.json", ["text_config", "hidden_size"], 65536 as any Sendable, "operations"),
        ("config.json", ["text_config", "model_type"], "llama" as any Sendable, "text_config.model_type"),
        ("config.json", ["qformer_config", "encoder_hidden_size"], 48 as any Sendable, "qformer_config.encoder_hidden_size"),
    ] as [(String, [String], any Sendable, String)])
    func unusableConfig(_ file: String, _ path: [String], _ value: any Sendable, _ field: String) throws {
        let scratch = Scratch()
        let checkpoint = try CheckpointCopy(scratch)
        try checkpoint.editJSON(file, path, value)
        expectRefusal(try Self.convert(checkpoint, scratch), [file, field], "\(file) \(path)")
        #expect(scratch.contents == ["ckpt"])
    }

    /// Case 10: a conversion killed with SIGKILL leaves `.NAME.tmp-PID`; the next conversion to the same
    /// path removes it, and only it: not a live process's file, not other names.
    @Test func staleTemporaryFilesAreRemoved() throws {
        let scratch = Scratch()
        let checkpoint = try CheckpointCopy(scratch)
        let finished = Process()
        finished.executableURL = URL(fileURLWithPath: "/bin/true")
        try finished.run()
        finished.waitUntilExit()
        let deadPID = finished.processIdentifier
        let header = Data(count: 128) + Data(repeating: 7, count: 1000)
        let stale = ".out.blip2.tmp-\(deadPID)", live = ".out.blip2.tmp-\(getpid())"
        let others = [".other.blip2.tmp-\(deadPID)", ".out.blip2.tmp-\(deadPID)x", "out.blip2.tmp-\(deadPID)"]
        for name in [stale, live] + others { try header.write(to: URL(fileURLWithPath: scratch.path(name))) }
        // A file of the pattern that does not start like the converter's output is not ours to remove.
        let foreign = ".out.blip2.tmp-\(deadPID + 1_000_000)"
        try Data("notes".utf8).write(to: URL(fileURLWithPath: scratch.path(foreign)))

        let result = try Self.convert(checkpoint, scratch, ["--weights", "f32"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(Set(scratch.contents) == Set(["ckpt", "out.blip2", live, foreign] + others))
    }
}

@Suite struct HostileMessageTests {
    /// Case 9: messages that used to leak internals, and output into a missing folder failing before
    /// any result is printed.
    @Test func messagesNameTheProblem() throws {
        let scratch = Scratch()
        let fifo = scratch.path("image.jpg")
        #expect(mkfifo(fifo, 0o600) == 0)
        let soi = scratch.path("soi.jpg")
        try Data([0xFF, 0xD8]).write(to: URL(fileURLWithPath: soi))
        let missing = scratch.path("no/such/folder/out.npy")
        let model = demoModel.path
        let cases: [([String], [String], [String])] = [
            (["caption", model, demoImage, "--dump-logits", missing], ["--dump-logits", "does not exist"], ["Error Domain"]),
            (["ask", model, demoImage, "what is it?", "--dump-logits", missing], ["--dump-logits", "does not exist"], ["Error Domain"]),
            (["preprocess", model, demoImage, "--output", missing], ["--output", "does not exist"], ["Error Domain"]),
            (["caption", model, fifo], [fifo, "FIFO"], ["permission"]),
            (["caption", model, soi], [soi, "truncated"], ["unrecognized"]),
        ]
        for (args, needles, forbidden) in cases {
            let result = try blip2.run(args, timeout: hangGuard)
            expectRefusal(result, needles, "\(args)")
            for word in forbidden { #expect(!result.stderr.contains(word), "\(args): \(result.stderr)") }
        }
        #expect(!FileManager.default.fileExists(atPath: scratch.path("no")))

        // A negative number is a value out of range, never a missing value.
        let negatives: [([String], String)] = [
            (["caption", model, demoImage, "--max-new-tokens", "-1"], "max-new-tokens"),
            (["serve", model, "--port", "-1"], "--port"),
            (["serve", model, "--camera", "-", "--camera-every", "-1"], "--camera-every"),
            (["watch", model, "-", "--every", "-1"], "--every"),
            (["watch", model, "-", "--max-frames", "-1"], "--max-frames"),
        ]
        for (args, flag) in negatives {
            let negative = try blip2.run(args, timeout: hangGuard)
            #expect(negative.status == 64, "\(args): \(negative.stderr)")
            #expect(negative.stderr.contains(flag), "\(args): \(negative.stderr)")
            #expect(!negative.stderr.contains("Missing value"), "\(args): \(negative.stderr)")
        }
    }

    /// Case 11: a JPEG header claiming 8000x8000 over a thumbnail's bytes is refused before decoding.
    @Test func jpegClaimingFarMorePixelsThanItsData() throws {
        let scratch = Scratch()
        var bytes = Array(try Data(contentsOf: packageRoot.appendingPathComponent("Tests/Fixtures/images/inputs/jpeg_420_odd_45x31.jpg")))
        // Walk the marker segments to the start-of-frame; height and width follow its length and precision.
        var position = 2
        while !(0xC0...0xC2).contains(bytes[position + 1]) {
            position += 2 + (Int(bytes[position + 2]) << 8 | Int(bytes[position + 3]))
        }
        for (i, byte) in [0x1F, 0x40, 0x1F, 0x40].enumerated() { bytes[position + 5 + i] = UInt8(byte) }   // 8000 x 8000
        let file = scratch.path("claims-8000.jpg")
        try Data(bytes).write(to: URL(fileURLWithPath: file))
        expectRefusal(try blip2.run(["caption", demoModel.path, file], timeout: hangGuard), [file, "8000x8000"], "8000x8000 JPEG")
    }
}
