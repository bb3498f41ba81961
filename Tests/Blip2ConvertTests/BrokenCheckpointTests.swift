import Foundation
import Testing
@testable import Blip2Convert
@testable import Blip2ModelFile

/// Truncated, corrupt and inconsistent checkpoints are refused with a message naming the file and
/// the problem, and nothing is left at the output path.
@Suite struct BrokenCheckpointTests {
    func expectRefused(_ folder: URL, _ needles: [String], scratch: Scratch, sourceLocation: SourceLocation = #_sourceLocation) {
        let output = scratch.path("out.blip2")
        do {
            _ = try Converter.convert(checkpoint: folder, output: output, options: ConversionOptions())
            Issue.record("converted a broken checkpoint", sourceLocation: sourceLocation)
        } catch {
            for needle in needles { #expect("\(error)".contains(needle), "message: \(error)", sourceLocation: sourceLocation) }
        }
        #expect(!scratch.contents.contains { $0.hasSuffix(".blip2") || $0.contains(".tmp-") }, "nothing written: \(scratch.contents)", sourceLocation: sourceLocation)
    }

    func rewrite(_ folder: URL, _ file: String = "model.safetensors", _ edit: (inout SafeTensorsBuilder) -> Void) throws {
        let url = folder.appendingPathComponent(file)
        var builder = try SafeTensorsBuilder.reading(url)
        edit(&builder)
        try builder.write(to: url)
    }

    @Test func truncatedShard() throws {
        let scratch = Scratch()
        let folder = try scratch.copy(of: "base-f32")
        let url = folder.appendingPathComponent("model.safetensors")
        let bytes = try Data(contentsOf: url)
        try bytes.prefix(bytes.count - 100).write(to: url)
        expectRefused(folder, ["model.safetensors", "outside"], scratch: scratch)
        try bytes.prefix(20).write(to: url)
        expectRefused(folder, ["model.safetensors", "truncated"], scratch: scratch)
    }

    @Test func corruptShardHeader() throws {
        let scratch = Scratch()
        let folder = try scratch.copy(of: "base-f32")
        let url = folder.appendingPathComponent("model.safetensors")
        var bytes = Array(try Data(contentsOf: url))
        bytes[10] = 0x01   // a control character inside a JSON string
        try Data(bytes).write(to: url)
        expectRefused(folder, ["model.safetensors", "JSON"], scratch: scratch)
    }

    @Test func missingShardNamedByTheIndex() throws {
        let scratch = Scratch()
        let folder = try scratch.copy(of: "sharded-untied-f32")
        let shards = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".safetensors") }.sorted()
        #expect(shards.count >= 2)
        try FileManager.default.removeItem(at: folder.appendingPathComponent(shards[1]))
        expectRefused(folder, [shards[1], "missing shard"], scratch: scratch)
    }

    @Test func indexDisagreesWithShards() throws {
        let scratch = Scratch()
        let folder = try scratch.copy(of: "sharded-untied-f32")
        let indexURL = folder.appendingPathComponent("model.safetensors.index.json")
        var index = try JSONSerialization.jsonObject(with: Data(contentsOf: indexURL)) as! [String: Any]
        var map = index["weight_map"] as! [String: String]
        map["vision_model.extra.weight"] = map.values.first!
        index["weight_map"] = map
        try JSONSerialization.data(withJSONObject: index).write(to: indexURL)
        expectRefused(folder, ["vision_model.extra.weight", "lacks it"], scratch: scratch)
    }

    @Test func missingWeight() throws {
        let scratch = Scratch()
        let folder = try scratch.copy(of: "base-f32")
        try rewrite(folder) { $0.items.removeAll { $0.name == "qformer.encoder.layer.1.output_query.dense.weight" } }
        expectRefused(folder, ["missing", "qformer.encoder.layer.1.output_query.dense.weight"], scratch: scratch)
    }

    @Test func unexpectedWeight() throws {
        let scratch = Scratch()
        let folder = try scratch.copy(of: "base-f32")
        try rewrite(folder) { $0.add("vision_model.encoder.layers.9.mlp.fc1.weight", dtype: "F32", shape: [1], bytes: [0, 0, 0, 0]) }
        expectRefused(folder, ["unexpected tensor", "vision_model.encoder.layers.9.mlp.fc1.weight"], scratch: scratch)
    }

    @Test func shapeDisagreesWithConfig() throws {
        let scratch = Scratch()
        let folder = try scratch.copy(of: "base-f32")
        try rewrite(folder) { builder in
            let i = builder.items.firstIndex { $0.name == "language_projection.bias" }!
            let item = builder.items[i]
            builder.items[i] = .init(name: item.name, dtype: "F32", shape: [item.shape[0] - 1], bytes: Array(item.bytes.dropLast(4)))
        }
        expectRefused(folder, ["model.safetensors", "language_projection.bias", "config.json implies"], scratch: scratch)
    }

    @Test func unsupportedDtype() throws {
        let scratch = Scratch()
        let folder = try scratch.copy(of: "base-f32")
        try rewrite(folder) { builder in
            let i = builder.items.firstIndex { $0.name == "language_projection.bias" }!
            let item = builder.items[i]
            builder.items[i] = .init(name: item.name, dtype: "I32", shape: item.shape, bytes: item.bytes)
        }
        expectRefused(folder, ["model.safetensors", "language_projection.bias", "I32"], scratch: scratch)
    }

    @Test func brokenConfig() throws {
        let scratch = Scratch()
        let folder = try scratch.copy(of: "base-f32")
        let config = folder.appendingPathComponent("config.json")
        try Data("{\"model_type\": \"blip-2\", \"vision_config\": {\"hidden_size\": \"wide\"}}".utf8).write(to: config)
        expectRefused(folder, ["config.json", "hidden_size"], scratch: scratch)
        try Data("{\"model_type\": \"llama\"}".utf8).write(to: config)
        expectRefused(folder, ["config.json", "llama"], scratch: scratch)
        try Data("{\"model_type\": \"blip-2\", \"use_decoder_only_language_model\": false}".utf8).write(to: config)
        expectRefused(folder, ["config.json", "T5"], scratch: scratch)
        try Data("not json".utf8).write(to: config)
        expectRefused(folder, ["config.json"], scratch: scratch)
        try FileManager.default.removeItem(at: config)
        expectRefused(folder, ["config.json", "missing"], scratch: scratch)
    }

    @Test func missingSidecarFiles() throws {
        let scratch = Scratch()
        let folder = try scratch.copy(of: "base-f32")
        try FileManager.default.removeItem(at: folder.appendingPathComponent("preprocessor_config.json"))
        expectRefused(folder, ["preprocessor_config.json", "missing"], scratch: scratch)
        let other = try scratch.copy(of: "deep-f16-tied")
        try FileManager.default.removeItem(at: other.appendingPathComponent("vocab.json"))
        expectRefused(other, ["vocab.json"], scratch: scratch)
        let weightless = try scratch.copy(of: "f16-noqkvbias-eos2")
        for file in try FileManager.default.contentsOfDirectory(atPath: weightless.path) where file.hasSuffix(".safetensors") {
            try FileManager.default.removeItem(at: weightless.appendingPathComponent(file))
        }
        expectRefused(weightless, ["no model.safetensors"], scratch: scratch)
        expectRefused(scratch.url.appendingPathComponent("nowhere"), ["not a checkpoint folder"], scratch: scratch)
    }

    @Test func failedRunKeepsAnExistingOutput() throws {
        let scratch = Scratch()
        let output = scratch.path("keep.blip2")
        try Data("previous".utf8).write(to: URL(fileURLWithPath: output))
        let folder = try scratch.copy(of: "base-f32")
        try rewrite(folder) { $0.items.removeAll { $0.name == "query_tokens" } }
        #expect(throws: ConversionError.self) { try Converter.convert(checkpoint: folder, output: output, options: ConversionOptions()) }
        #expect(try Data(contentsOf: URL(fileURLWithPath: output)) == Data("previous".utf8))
        #expect(scratch.contents.filter { $0.contains(".tmp-") }.isEmpty)
    }
}
