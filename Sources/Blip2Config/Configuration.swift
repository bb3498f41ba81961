import Foundation

// MARK: - Configuration
//
// Mirrors Hugging Face's `Blip2Config` (config.json). Keys a config leaves out take the defaults of the
// `transformers` classes, because older checkpoints only store what differs from them.

public struct Blip2VisionConfig: Codable, Sendable, Equatable {
    public var hiddenSize = 1408
    public var intermediateSize = 6144
    public var numHiddenLayers = 39
    public var numAttentionHeads = 16
    public var imageSize = 224
    public var patchSize = 14
    public var numChannels = 3
    public var layerNormEps = 1e-6
    public var qkvBias = true
    public var hiddenAct = "gelu"

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size", intermediateSize = "intermediate_size", numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads", imageSize = "image_size", patchSize = "patch_size"
        case numChannels = "num_channels", layerNormEps = "layer_norm_eps", qkvBias = "qkv_bias", hiddenAct = "hidden_act"
    }

    public init() {}
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = Self()
        hiddenSize = try c.decodeIfPresent(Int.self, forKey: .hiddenSize) ?? d.hiddenSize
        intermediateSize = try c.decodeIfPresent(Int.self, forKey: .intermediateSize) ?? d.intermediateSize
        numHiddenLayers = try c.decodeIfPresent(Int.self, forKey: .numHiddenLayers) ?? d.numHiddenLayers
        numAttentionHeads = try c.decodeIfPresent(Int.self, forKey: .numAttentionHeads) ?? d.numAttentionHeads
        imageSize = try c.decodeIfPresent(Int.self, forKey: .imageSize) ?? d.imageSize
        patchSize = try c.decodeIfPresent(Int.self, forKey: .patchSize) ?? d.patchSize
        numChannels = try c.decodeIfPresent(Int.self, forKey: .numChannels) ?? d.numChannels
        layerNormEps = try c.decodeIfPresent(Double.self, forKey: .layerNormEps) ?? d.layerNormEps
        qkvBias = try c.decodeIfPresent(Bool.self, forKey: .qkvBias) ?? d.qkvBias
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? d.hiddenAct
    }

    /// Patch tokens plus the class token.
    public var numPositions: Int { (imageSize / patchSize) * (imageSize / patchSize) + 1 }
}

public struct Blip2QFormerConfig: Codable, Sendable, Equatable {
    public var hiddenSize = 768
    public var numHiddenLayers = 12
    public var numAttentionHeads = 12
    public var intermediateSize = 3072
    public var crossAttentionFrequency = 2
    public var encoderHiddenSize = 1408
    public var layerNormEps = 1e-12
    public var hiddenAct = "gelu"

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size", numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
        case intermediateSize = "intermediate_size", crossAttentionFrequency = "cross_attention_frequency"
        case encoderHiddenSize = "encoder_hidden_size", layerNormEps = "layer_norm_eps", hiddenAct = "hidden_act"
    }

    public init() {}
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = Self()
        hiddenSize = try c.decodeIfPresent(Int.self, forKey: .hiddenSize) ?? d.hiddenSize
        numHiddenLayers = try c.decodeIfPresent(Int.self, forKey: .numHiddenLayers) ?? d.numHiddenLayers
        numAttentionHeads = try c.decodeIfPresent(Int.self, forKey: .numAttentionHeads) ?? d.numAttentionHeads
        intermediateSize = try c.decodeIfPresent(Int.self, forKey: .intermediateSize) ?? d.intermediateSize
        crossAttentionFrequency = try c.decodeIfPresent(Int.self, forKey: .crossAttentionFrequency) ?? d.crossAttentionFrequency
        encoderHiddenSize = try c.decodeIfPresent(Int.self, forKey: .encoderHiddenSize) ?? d.encoderHiddenSize
        layerNormEps = try c.decodeIfPresent(Double.self, forKey: .layerNormEps) ?? d.layerNormEps
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? d.hiddenAct
    }

    /// Layers with cross-attention to the image: every `crossAttentionFrequency`-th, starting at 0.
    public func hasCrossAttention(layer: Int) -> Bool { layer % crossAttentionFrequency == 0 }
}

public struct OPTConfig: Codable, Sendable, Equatable {
    public var vocabSize = 50272
    public var hiddenSize = 768
    public var numHiddenLayers = 12
    public var numAttentionHeads = 12
    public var ffnDim = 3072
    public var maxPositionEmbeddings = 2048
    /// Width of the token embeddings; differs from `hiddenSize` only in models with project_in/out.
    public var wordEmbedProjDim: Int?
    public var doLayerNormBefore = true
    public var removeFinalLayerNorm = false
    public var enableBias = true
    public var layerNormElementwiseAffine = true
    public var activationFunction = "relu"
    public var bosTokenId: Int? = 2
    public var eosTokenId: Int? = 2
    public var padTokenId: Int? = 1
    public var tieWordEmbeddings = true

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size", hiddenSize = "hidden_size", numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads", ffnDim = "ffn_dim", maxPositionEmbeddings = "max_position_embeddings"
        case wordEmbedProjDim = "word_embed_proj_dim", doLayerNormBefore = "do_layer_norm_before"
        case removeFinalLayerNorm = "_remove_final_layer_norm", enableBias = "enable_bias"
        case layerNormElementwiseAffine = "layer_norm_elementwise_affine", activationFunction = "activation_function"
        case bosTokenId = "bos_token_id", eosTokenId = "eos_token_id", padTokenId = "pad_token_id"
        case tieWordEmbeddings = "tie_word_embeddings"
    }

    public init() {}
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = Self()
        vocabSize = try c.decodeIfPresent(Int.self, forKey: .vocabSize) ?? d.vocabSize
        hiddenSize = try c.decodeIfPresent(Int.self, forKey: .hiddenSize) ?? d.hiddenSize
        numHiddenLayers = try c.decodeIfPresent(Int.self, forKey: .numHiddenLayers) ?? d.numHiddenLayers
        numAttentionHeads = try c.decodeIfPresent(Int.self, forKey: .numAttentionHeads) ?? d.numAttentionHeads
        ffnDim = try c.decodeIfPresent(Int.self, forKey: .ffnDim) ?? d.ffnDim
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? d.maxPositionEmbeddings
        wordEmbedProjDim = try c.decodeIfPresent(Int.self, forKey: .wordEmbedProjDim)
        doLayerNormBefore = try c.decodeIfPresent(Bool.self, forKey: .doLayerNormBefore) ?? d.doLayerNormBefore
        removeFinalLayerNorm = try c.decodeIfPresent(Bool.self, forKey: .removeFinalLayerNorm) ?? d.removeFinalLayerNorm
        enableBias = try c.decodeIfPresent(Bool.self, forKey: .enableBias) ?? d.enableBias
        layerNormElementwiseAffine = try c.decodeIfPresent(Bool.self, forKey: .layerNormElementwiseAffine) ?? d.layerNormElementwiseAffine
        activationFunction = try c.decodeIfPresent(String.self, forKey: .activationFunction) ?? d.activationFunction
        bosTokenId = c.contains(.bosTokenId) ? try c.decodeIfPresent(Int.self, forKey: .bosTokenId) : d.bosTokenId
        eosTokenId = c.contains(.eosTokenId) ? try Self.firstId(c, .eosTokenId) : d.eosTokenId
        padTokenId = c.contains(.padTokenId) ? try c.decodeIfPresent(Int.self, forKey: .padTokenId) : d.padTokenId
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? d.tieWordEmbeddings
    }

    /// `eos_token_id` may be a list in newer configs; generation stops at the first.
    private static func firstId(_ c: KeyedDecodingContainer<CodingKeys>, _ key: CodingKeys) throws -> Int? {
        if let list = try? c.decodeIfPresent([Int].self, forKey: key) { return list.first }
        return try c.decodeIfPresent(Int.self, forKey: key)
    }

    public var embeddingDim: Int { wordEmbedProjDim ?? hiddenSize }
    public var hasFinalLayerNorm: Bool { doLayerNormBefore && !removeFinalLayerNorm }
    /// OPT's learned positions start at row 2 (a fairseq offset), so the table has two extra rows.
    public static let positionOffset = 2
}

public struct Blip2Config: Codable, Sendable, Equatable {
    public var visionConfig = Blip2VisionConfig()
    public var qformerConfig = Blip2QFormerConfig()
    public var textConfig = OPTConfig()
    public var numQueryTokens = 32
    public var imageTokenIndex: Int?
    public var useDecoderOnlyLanguageModel = true
    /// The checkpoint's dtype as the config names it (`dtype` in 5.x, `torch_dtype` in 4.x).
    public var dtype: String?

    enum CodingKeys: String, CodingKey {
        case visionConfig = "vision_config", qformerConfig = "qformer_config", textConfig = "text_config"
        case numQueryTokens = "num_query_tokens", imageTokenIndex = "image_token_index"
        case useDecoderOnlyLanguageModel = "use_decoder_only_language_model", dtype
        case torchDtype = "torch_dtype", modelType = "model_type", tieWordEmbeddings = "tie_word_embeddings"
    }

    public init() {}
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let modelType = try c.decodeIfPresent(String.self, forKey: .modelType), modelType != "blip-2" {
            throw ConfigError("config.json describes a '\(modelType)' model, not 'blip-2'")
        }
        visionConfig = try c.decodeIfPresent(Blip2VisionConfig.self, forKey: .visionConfig) ?? Blip2VisionConfig()
        qformerConfig = try c.decodeIfPresent(Blip2QFormerConfig.self, forKey: .qformerConfig) ?? Blip2QFormerConfig()
        textConfig = try c.decodeIfPresent(OPTConfig.self, forKey: .textConfig) ?? OPTConfig()
        // 4.x configs may carry the tie setting only at the top level.
        let textContainer = try? c.nestedContainer(keyedBy: OPTConfig.CodingKeys.self, forKey: .textConfig)
        if textContainer?.contains(.tieWordEmbeddings) != true,
           let topLevel = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) {
            textConfig.tieWordEmbeddings = topLevel
        }
        numQueryTokens = try c.decodeIfPresent(Int.self, forKey: .numQueryTokens) ?? 32
        imageTokenIndex = try c.decodeIfPresent(Int.self, forKey: .imageTokenIndex)
        useDecoderOnlyLanguageModel = try c.decodeIfPresent(Bool.self, forKey: .useDecoderOnlyLanguageModel) ?? true
        dtype = try c.decodeIfPresent(String.self, forKey: .dtype) ?? c.decodeIfPresent(String.self, forKey: .torchDtype)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(visionConfig, forKey: .visionConfig)
        try c.encode(qformerConfig, forKey: .qformerConfig)
        try c.encode(textConfig, forKey: .textConfig)
        try c.encode(numQueryTokens, forKey: .numQueryTokens)
        try c.encodeIfPresent(imageTokenIndex, forKey: .imageTokenIndex)
        try c.encode(useDecoderOnlyLanguageModel, forKey: .useDecoderOnlyLanguageModel)
        try c.encodeIfPresent(dtype, forKey: .dtype)
        try c.encode("blip-2", forKey: .modelType)
    }

    /// Reads and checks a Hugging Face `config.json`.
    public static func load(contentsOf url: URL) throws -> Blip2Config {
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw ConfigError("\(url.path): cannot read (\(error.localizedDescription))") }
        let config: Blip2Config
        do { config = try JSONDecoder().decode(Blip2Config.self, from: data) } catch let error as ConfigError {
            throw ConfigError("\(url.path): \(error.message)")
        } catch {
            throw ConfigError("\(url.path): not a valid BLIP-2 config (\(describe(error)))")
        }
        do { try config.validate() } catch let error as ConfigError { throw ConfigError("\(url.path): \(error.message)") }
        return config
    }

    /// Rejects configurations this runtime cannot run, with the reason.
    public func validate() throws {
        guard useDecoderOnlyLanguageModel else {
            throw ConfigError("only BLIP-2 with a decoder-only (OPT) language model is supported; this checkpoint uses an encoder-decoder (T5) model")
        }
        let v = visionConfig, q = qformerConfig, t = textConfig
        func positive(_ values: [(String, Int)]) throws {
            for (name, value) in values where value <= 0 { throw ConfigError("\(name) must be positive, got \(value)") }
        }
        try positive([("vision_config.hidden_size", v.hiddenSize), ("vision_config.intermediate_size", v.intermediateSize),
                      ("vision_config.num_hidden_layers", v.numHiddenLayers), ("vision_config.num_attention_heads", v.numAttentionHeads),
                      ("vision_config.image_size", v.imageSize), ("vision_config.patch_size", v.patchSize),
                      ("qformer_config.hidden_size", q.hiddenSize), ("qformer_config.num_hidden_layers", q.numHiddenLayers),
                      ("qformer_config.num_attention_heads", q.numAttentionHeads), ("qformer_config.intermediate_size", q.intermediateSize),
                      ("qformer_config.cross_attention_frequency", q.crossAttentionFrequency),
                      ("text_config.vocab_size", t.vocabSize), ("text_config.hidden_size", t.hiddenSize),
                      ("text_config.num_hidden_layers", t.numHiddenLayers), ("text_config.num_attention_heads", t.numAttentionHeads),
                      ("text_config.ffn_dim", t.ffnDim), ("text_config.max_position_embeddings", t.maxPositionEmbeddings),
                      ("num_query_tokens", numQueryTokens)])
        let limit = 1 << 20
        for (name, value) in [("vision hidden", v.hiddenSize), ("text hidden", t.hiddenSize), ("vocabulary", t.vocabSize)] where value > limit {
            throw ConfigError("\(name) size \(value) is implausibly large")
        }
        guard v.hiddenSize % v.numAttentionHeads == 0 else { throw ConfigError("vision hidden_size \(v.hiddenSize) is not divisible by \(v.numAttentionHeads) heads") }
        guard q.hiddenSize % q.numAttentionHeads == 0 else { throw ConfigError("qformer hidden_size \(q.hiddenSize) is not divisible by \(q.numAttentionHeads) heads") }
        guard t.hiddenSize % t.numAttentionHeads == 0 else { throw ConfigError("text hidden_size \(t.hiddenSize) is not divisible by \(t.numAttentionHeads) heads") }
        guard v.imageSize % v.patchSize == 0 else { throw ConfigError("image_size \(v.imageSize) is not a multiple of patch_size \(v.patchSize)") }
        guard v.hiddenAct == "gelu", q.hiddenAct == "gelu" else { throw ConfigError("only the exact (erf) GELU activation is supported in the vision model and Q-Former") }
        guard t.activationFunction == "relu" else { throw ConfigError("OPT activation '\(t.activationFunction)' is not supported (only relu)") }
        if let image = imageTokenIndex, image < 0 { throw ConfigError("image_token_index \(image) is negative") }
        if let eos = t.eosTokenId, eos < 0 || eos >= t.vocabSize { throw ConfigError("text_config.eos_token_id \(eos) is outside the vocabulary (\(t.vocabSize))") }
    }
}

public struct ConfigError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

func describe(_ error: Error) -> String {
    switch error {
    case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context),
         DecodingError.dataCorrupted(let context):
        let path = context.codingPath.map(\.stringValue).joined(separator: ".")
        return path.isEmpty ? context.debugDescription : "\(path): \(context.debugDescription)"
    case DecodingError.keyNotFound(let key, _):
        return "missing key \(key.stringValue)"
    default:
        return "\(error)"
    }
}
