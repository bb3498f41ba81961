import Blip2Configs
import Foundation
import Testing

/// The budget `Blip2Config.check` enforces must admit the real models at their real size, and refuse
/// the same configurations when the weights behind them are missing.
@Suite struct ConfigCheckTests {
    /// Salesforce/blip2-opt-2.7b and blip2-opt-6.7b as their hub configs describe them.
    static func released(textHidden: Int, ffn: Int) -> Blip2Config {
        var config = Blip2Config()
        config.textConfig.vocabSize = 50304
        config.textConfig.hiddenSize = textHidden
        config.textConfig.numHiddenLayers = 32
        config.textConfig.numAttentionHeads = 32
        config.textConfig.ffnDim = ffn
        config.textConfig.maxPositionEmbeddings = 2048
        config.textConfig.wordEmbedProjDim = textHidden
        config.textConfig.eosTokenId = 50118
        config.imageTokenIndex = 50265
        return config
    }

    static func weightCount(_ config: Blip2Config) throws -> Int {
        try WeightManifest(config: config).weights.reduce(0) { $0 + $1.shape.reduce(1, *) }
    }

    @Test(arguments: [(2560, 10240), (4096, 16384)])
    func releasedModelsPass(textHidden: Int, ffn: Int) throws {
        let config = Self.released(textHidden: textHidden, ffn: ffn)
        let weights = try Self.weightCount(config)
        try config.check(storedElements: weights)
        // With room to spare: a 4x smaller file would still pass, so the ceilings are not tight.
        try config.check(storedElements: weights / 4)
        // The KV cache alone for 512 positions: 32 layers x 2 x 512 x hidden floats.
        let cost = try config.estimatedCost()
        #expect(cost.activationBytes >= 32 * 2 * 512 * textHidden * 4)
        #expect(cost.activationBytes < 2_000_000_000)
    }

    @Test func theSameConfigWithoutItsWeightsIsRefused() throws {
        let config = Self.released(textHidden: 2560, ffn: 10240)
        #expect(throws: ConfigError.self) { try config.check(storedElements: 1_000_000) }
    }

    @Test func everyValueIsRangeChecked() throws {
        func refused(_ change: (inout Blip2Config) -> Void, _ field: String, sourceLocation: SourceLocation = #_sourceLocation) {
            var config = Self.released(textHidden: 2560, ffn: 10240)
            change(&config)
            do {
                try config.validate()
                Issue.record("\(field) accepted", sourceLocation: sourceLocation)
            } catch {
                #expect("\(error)".contains(field), "\(error)", sourceLocation: sourceLocation)
            }
        }
        refused({ $0.visionConfig.numHiddenLayers = 0 }, "vision_config.num_hidden_layers")
        refused({ $0.visionConfig.numAttentionHeads = 0 }, "vision_config.num_attention_heads")
        refused({ $0.visionConfig.numAttentionHeads = 15 }, "not divisible")
        refused({ $0.visionConfig.patchSize = 15 }, "not a multiple of patch_size")
        refused({ $0.visionConfig.numChannels = 4 }, "vision_config.num_channels")
        refused({ $0.visionConfig.layerNormEps = .nan }, "vision_config.layer_norm_eps")
        refused({ $0.qformerConfig.crossAttentionFrequency = -2 }, "qformer_config.cross_attention_frequency")
        refused({ $0.qformerConfig.intermediateSize = 1 << 40 }, "qformer_config.intermediate_size")
        refused({ $0.textConfig.vocabSize = Int.max }, "text_config.vocab_size")
        refused({ $0.textConfig.wordEmbedProjDim = 0 }, "text_config.word_embed_proj_dim")
        refused({ $0.textConfig.maxPositionEmbeddings = Int.min }, "text_config.max_position_embeddings")
        refused({ $0.textConfig.padTokenId = 50304 }, "text_config.pad_token_id")
        refused({ $0.imageTokenIndex = -1 }, "image_token_index")
        refused({ $0.numQueryTokens = 1 << 20 }, "num_query_tokens")
    }
}
