// MARK: - Weights
//
// Every tensor a BLIP-2-OPT model of a given configuration has, under its Hugging Face key, with its
// shape and its role. The converter checks a checkpoint against this list in both directions, and the
// precision policy chooses types by role.

public enum ModelComponent: String, Codable, Sendable, CaseIterable {
    case vision
    case qformer
    case language
}

public enum WeightRole: String, Codable, Sendable, CaseIterable {
    /// A linear layer's [out, in] matrix: the bulk of the bytes and what gets quantized.
    case linearWeight = "linear"
    case bias
    case normWeight = "norm"
    case normBias = "norm_bias"
    /// Token embeddings [vocab, dim]; also the language model head when tied.
    case tokenEmbedding = "token_embedding"
    /// A separately stored language model head [vocab, dim].
    case outputHead = "lm_head"
    case positionEmbedding = "position_embedding"
    /// The 14x14 patch convolution [hidden, channels, patch, patch].
    case patchEmbedding = "patch_embedding"
    case classEmbedding = "class_embedding"
    case queryTokens = "query_tokens"
}

public struct WeightSpec: Sendable, Equatable {
    public let name: String
    public let shape: [Int]
    public let component: ModelComponent
    public let role: WeightRole
}

public struct WeightManifest: Sendable {
    public let weights: [WeightSpec]

    /// Validates `config` first: loop bounds and shapes below come straight from it.
    public init(config: Blip2Config) throws {
        try config.validate()
        var list: [WeightSpec] = []
        func add(_ name: String, _ shape: [Int], _ component: ModelComponent, _ role: WeightRole) {
            list.append(WeightSpec(name: name, shape: shape, component: component, role: role))
        }
        func linear(_ prefix: String, out: Int, in inputs: Int, _ component: ModelComponent, bias: Bool = true) {
            add("\(prefix).weight", [out, inputs], component, .linearWeight)
            if bias { add("\(prefix).bias", [out], component, .bias) }
        }
        func norm(_ prefix: String, _ dim: Int, _ component: ModelComponent, affine: Bool = true) {
            guard affine else { return }
            add("\(prefix).weight", [dim], component, .normWeight)
            add("\(prefix).bias", [dim], component, .normBias)
        }

        // Vision (EVA ViT-g)
        let v = config.visionConfig
        add("vision_model.embeddings.class_embedding", [1, 1, v.hiddenSize], .vision, .classEmbedding)
        add("vision_model.embeddings.patch_embedding.weight", [v.hiddenSize, v.numChannels, v.patchSize, v.patchSize], .vision, .patchEmbedding)
        add("vision_model.embeddings.patch_embedding.bias", [v.hiddenSize], .vision, .bias)
        add("vision_model.embeddings.position_embedding", [1, v.numPositions, v.hiddenSize], .vision, .positionEmbedding)
        for i in 0..<v.numHiddenLayers {
            let p = "vision_model.encoder.layers.\(i)"
            norm("\(p).layer_norm1", v.hiddenSize, .vision)
            add("\(p).self_attn.qkv.weight", [3 * v.hiddenSize, v.hiddenSize], .vision, .linearWeight)
            if v.qkvBias { add("\(p).self_attn.qkv.bias", [3 * v.hiddenSize], .vision, .bias) }
            linear("\(p).self_attn.projection", out: v.hiddenSize, in: v.hiddenSize, .vision)
            norm("\(p).layer_norm2", v.hiddenSize, .vision)
            linear("\(p).mlp.fc1", out: v.intermediateSize, in: v.hiddenSize, .vision)
            linear("\(p).mlp.fc2", out: v.hiddenSize, in: v.intermediateSize, .vision)
        }
        norm("vision_model.post_layernorm", v.hiddenSize, .vision)

        // Q-Former
        let q = config.qformerConfig
        add("query_tokens", [1, config.numQueryTokens, q.hiddenSize], .qformer, .queryTokens)
        norm("qformer.layernorm", q.hiddenSize, .qformer)
        for i in 0..<q.numHiddenLayers {
            let p = "qformer.encoder.layer.\(i)"
            for name in ["query", "key", "value"] {
                linear("\(p).attention.attention.\(name)", out: q.hiddenSize, in: q.hiddenSize, .qformer)
            }
            linear("\(p).attention.output.dense", out: q.hiddenSize, in: q.hiddenSize, .qformer)
            norm("\(p).attention.output.LayerNorm", q.hiddenSize, .qformer)
            if q.hasCrossAttention(layer: i) {
                linear("\(p).crossattention.attention.query", out: q.hiddenSize, in: q.hiddenSize, .qformer)
                linear("\(p).crossattention.attention.key", out: q.hiddenSize, in: q.encoderHiddenSize, .qformer)
                linear("\(p).crossattention.attention.value", out: q.hiddenSize, in: q.encoderHiddenSize, .qformer)
                linear("\(p).crossattention.output.dense", out: q.hiddenSize, in: q.hiddenSize, .qformer)
                norm("\(p).crossattention.output.LayerNorm", q.hiddenSize, .qformer)
            }
            linear("\(p).intermediate_query.dense", out: q.intermediateSize, in: q.hiddenSize, .qformer)
            linear("\(p).output_query.dense", out: q.hiddenSize, in: q.intermediateSize, .qformer)
            norm("\(p).output_query.LayerNorm", q.hiddenSize, .qformer)
        }

        // Projection into the language model
        let t = config.textConfig
        linear("language_projection", out: config.languageHiddenSize, in: q.hiddenSize, .language)

        if let t5 = config.t5Config {
            list += Self.t5Weights(t5)
            weights = list
            return
        }

        // OPT
        let d = "language_model.model.decoder"
        let bias = t.enableBias, affine = t.layerNormElementwiseAffine
        add("\(d).embed_tokens.weight", [t.vocabSize, t.embeddingDim], .language, .tokenEmbedding)
        add("\(d).embed_positions.weight", [t.maxPositionEmbeddings + OPTConfig.positionOffset, t.hiddenSize], .language, .positionEmbedding)
        if t.embeddingDim != t.hiddenSize {
            linear("\(d).project_in", out: t.hiddenSize, in: t.embeddingDim, .language, bias: false)
            linear("\(d).project_out", out: t.embeddingDim, in: t.hiddenSize, .language, bias: false)
        }
        for i in 0..<t.numHiddenLayers {
            let p = "\(d).layers.\(i)"
            for name in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                linear("\(p).self_attn.\(name)", out: t.hiddenSize, in: t.hiddenSize, .language, bias: bias)
            }
            norm("\(p).self_attn_layer_norm", t.hiddenSize, .language, affine: affine)
            linear("\(p).fc1", out: t.ffnDim, in: t.hiddenSize, .language, bias: bias)
            linear("\(p).fc2", out: t.hiddenSize, in: t.ffnDim, .language, bias: bias)
            norm("\(p).final_layer_norm", t.hiddenSize, .language, affine: affine)
        }
        if t.hasFinalLayerNorm { norm("\(d).final_layer_norm", t.hiddenSize, .language, affine: affine) }
        if !t.tieWordEmbeddings {
            add(Self.outputHeadKey, [t.vocabSize, t.embeddingDim], .language, .outputHead)
        }
        weights = list
    }

    public static let outputHeadKey = "language_model.lm_head.weight"
    public static let tokenEmbeddingKey = "language_model.model.decoder.embed_tokens.weight"

    public func spec(named name: String) -> WeightSpec? { weights.first { $0.name == name } }
}
