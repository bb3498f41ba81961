import Blip2Configs
import Foundation
import Testing
@testable import Blip2Convert

/// BLIP-2 Flan-T5 configs: the released sizes pass the budget, every T5 field the runtime sizes or branches on is
/// range-checked with a message naming it, and the converter accounts for every key of the fixtures.
@Suite struct T5ConfigTests {
    /// Salesforce/blip2-flan-t5-xl's text_config as the hub has it (Flan-T5-XL: 24 + 24 blocks of 2048, 32 heads
    /// of 64, gated-GELU 5120, untied head).
    static func flanT5XL() throws -> Blip2Config {
        let json = """
        {"model_type": "blip-2", "num_query_tokens": 32, "use_decoder_only_language_model": false,
         "text_config": {"model_type": "t5", "vocab_size": 32128, "d_model": 2048, "d_kv": 64, "d_ff": 5120,
                         "num_layers": 24, "num_heads": 32, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": false,
                         "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128}}
        """
        return try Blip2Config.decode(Data(json.utf8), source: "config.json")
    }

    @Test func releasedFlanT5XLPasses() throws {
        let config = try Self.flanT5XL()
        let t5 = try #require(config.t5Config)
        #expect(t5.decoderLayers == 24 && t5.isGated && !t5.tieWordEmbeddings && !t5.scaleDecoderOutputs)
        #expect(t5.decoderStartTokenId == 0 && t5.eosTokenId == 1)
        let manifest = try WeightManifest(config: config)
        let weights = manifest.weights.reduce(0) { $0 + $1.shape.reduce(1, *) }
        #expect(manifest.spec(named: WeightManifest.outputHeadKey) != nil)
        #expect(manifest.weights.filter { $0.name.hasSuffix("relative_attention_bias.weight") }.count == 2)
        try config.check(storedElements: weights)
        #expect(throws: ConfigError.self) { try config.check(storedElements: 1_000_000) }
    }

    @Test func scalingFollowsTransformers() throws {
        func t5(_ text: String) throws -> T5Config {
            let json = "{\"use_decoder_only_language_model\": false, \"text_config\": {\"model_type\": \"t5\"\(text)}}"
            return try #require(try Blip2Config.decode(Data(json.utf8), source: "config.json").t5Config)
        }
        #expect(try t5("").scaleDecoderOutputs)
        #expect(try !t5(", \"tie_word_embeddings\": false").scaleDecoderOutputs)
        #expect(try !t5(", \"tie_word_embeddings\": true, \"scale_decoder_outputs\": false").scaleDecoderOutputs)
        #expect(try t5(", \"num_layers\": 5").decoderLayers == 5)
    }

    @Test func everyT5FieldIsChecked() throws {
        func refused(_ change: (inout T5Config) -> Void, _ words: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
            var config = try Self.flanT5XL()
            change(&config.t5Config!)
            do {
                try config.validate()
                Issue.record("accepted a bad \(words[0])", sourceLocation: sourceLocation)
            } catch let error as ConfigError {
                for word in words { #expect(error.message.contains(word), "\(error.message)", sourceLocation: sourceLocation) }
            }
        }
        try refused({ $0.numHeads = 0 }, ["num_heads"])
        try refused({ $0.dKv = 0 }, ["d_kv"])
        try refused({ $0.dKv = 1 << 12; $0.numHeads = 1 << 8 }, ["num_heads x d_kv"])
        try refused({ $0.dModel = -1 }, ["d_model"])
        try refused({ $0.dFf = 0 }, ["d_ff"])
        try refused({ $0.numLayers = 0 }, ["num_layers"])
        try refused({ $0.numDecoderLayers = 100_000 }, ["num_decoder_layers"])
        try refused({ $0.relativeAttentionNumBuckets = 0 }, ["relative_attention_num_buckets"])
        try refused({ $0.relativeAttentionNumBuckets = 3 }, ["relative_attention_num_buckets"])
        try refused({ $0.relativeAttentionMaxDistance = 16 }, ["relative_attention_max_distance"])
        try refused({ $0.layerNormEpsilon = 0 }, ["layer_norm_epsilon"])
        try refused({ $0.feedForwardProj = "gated-silu" }, ["feed_forward_proj", "gated-silu"])
        try refused({ $0.decoderStartTokenId = 40_000 }, ["decoder_start_token_id"])
        try refused({ $0.eosTokenId = -1 }, ["eos_token_id"])
        try refused({ $0.vocabSize = 0 }, ["vocab_size"])

        var decoderOnly = try Self.flanT5XL()
        decoderOnly.useDecoderOnlyLanguageModel = true
        #expect(throws: ConfigError.self) { try decoderOnly.validate() }
    }

    /// Every key of each fixture checkpoint is a weight or ignored for a stated reason; the head follows what
    /// is stored, whatever tie_word_embeddings says, and the file's config says so explicitly.
    @Test(arguments: ["gated-tied", "relu-untied", "gated-tied-unscaled-small-buckets"])
    func everyKeyIsAccountedFor(model name: String) throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/models-t5/\(name)/checkpoint")
        let checkpoint = try Checkpoint(folder: folder)
        let manifest = try WeightManifest(config: checkpoint.config)
        let plan = try Converter.plan(checkpoint: checkpoint, manifest: manifest)
        #expect(plan.sources.count == manifest.weights.count)
        #expect(plan.ignored.isEmpty)
        let headStored = checkpoint.tensors[WeightManifest.outputHeadKey] != nil
        #expect(checkpoint.config.t5Config?.tieWordEmbeddings == !headStored)
        let stored = try JSONSerialization.jsonObject(with: checkpoint.configJSON) as! [String: Any]
        let text = stored["text_config"] as! [String: Any]
        #expect(text["tie_word_embeddings"] as? Bool == !headStored)
        #expect(text["scale_decoder_outputs"] as? Bool == checkpoint.config.t5Config?.scaleDecoderOutputs)
    }

    /// A writable copy of a T5 fixture checkpoint whose safetensors file `edit` changes.
    func edited(_ model: String, scratch: Scratch, _ edit: (inout SafeTensorsBuilder) -> Void) throws -> URL {
        let folder = scratch.url.appendingPathComponent("\(model)-copy")
        try FileManager.default.copyItem(at: t5Checkpoint(model), to: folder)
        let url = folder.appendingPathComponent("model.safetensors")
        var builder = try SafeTensorsBuilder.reading(url)
        edit(&builder)
        try builder.write(to: url)
        return folder
    }

    func t5Checkpoint(_ model: String) -> URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/models-t5/\(model)/checkpoint")
    }

    /// Hub checkpoints keep copies of `shared` in both stacks (and old T5 ones a cross-attention bias that
    /// transformers ignores): they convert, each ignored key named with its reason.
    @Test func hubCopiesOfSharedAreIgnoredWithReasons() throws {
        let scratch = Scratch()
        let folder = try edited("relu-untied", scratch: scratch) { builder in
            let shared = builder.items.first { $0.name == "language_model.shared.weight" }!
            for stack in ["encoder", "decoder"] {
                builder.add("language_model.\(stack).embed_tokens.weight", dtype: shared.dtype, shape: shared.shape, bytes: shared.bytes)
            }
            let bias = builder.items.first { $0.name.hasSuffix("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight") }!
            builder.add("language_model.decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight", dtype: bias.dtype,
                        shape: bias.shape, bytes: bias.bytes)
        }
        let report = try Converter.convert(checkpoint: folder, output: scratch.path("hub.blip2"), options: ConversionOptions())
        #expect(report.ignored.count == 3)
        #expect(report.ignored.filter { $0.contains("copy of language_model.shared.weight") }.count == 2)
        #expect(report.ignored.contains { $0.contains("EncDecAttention.relative_attention_bias") && $0.contains("no position bias") })
    }

    /// A bias table where T5 has none, or a missing one, is a checkpoint that does not match its config.
    @Test func misplacedOrMissingRelativeBiasIsRefused() throws {
        let scratch = Scratch()
        let extra = try edited("gated-tied", scratch: scratch) { builder in
            let bias = builder.items.first { $0.name.hasSuffix("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight") }!
            builder.add("language_model.encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight", dtype: bias.dtype,
                        shape: bias.shape, bytes: bias.bytes)
        }
        #expect { _ = try Converter.convert(checkpoint: extra, output: scratch.path("a.blip2"), options: ConversionOptions()) } throws: {
            "\($0)".contains("unexpected tensor 'language_model.encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight'")
        }
        let copy = try edited("relu-untied", scratch: scratch) { builder in
            builder.items.removeAll { $0.name.hasSuffix("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight") }
        }
        #expect { _ = try Converter.convert(checkpoint: copy, output: scratch.path("b.blip2"), options: ConversionOptions()) } throws: {
            "\($0)".contains("missing") && "\($0)".contains("relative_attention_bias")
        }
        #expect(!scratch.contents.contains { $0.hasSuffix(".blip2") || $0.contains(".tmp-") })
    }
}
