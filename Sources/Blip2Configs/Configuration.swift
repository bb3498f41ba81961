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
        hiddenSize = try c.integer(.hiddenSize) ?? d.hiddenSize
        intermediateSize = try c.integer(.intermediateSize) ?? d.intermediateSize
        numHiddenLayers = try c.integer(.numHiddenLayers) ?? d.numHiddenLayers
        numAttentionHeads = try c.integer(.numAttentionHeads) ?? d.numAttentionHeads
        imageSize = try c.integer(.imageSize) ?? d.imageSize
        patchSize = try c.integer(.patchSize) ?? d.patchSize
        numChannels = try c.integer(.numChannels) ?? d.numChannels
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
        hiddenSize = try c.integer(.hiddenSize) ?? d.hiddenSize
        numHiddenLayers = try c.integer(.numHiddenLayers) ?? d.numHiddenLayers
        numAttentionHeads = try c.integer(.numAttentionHeads) ?? d.numAttentionHeads
        intermediateSize = try c.integer(.intermediateSize) ?? d.intermediateSize
        crossAttentionFrequency = try c.integer(.crossAttentionFrequency) ?? d.crossAttentionFrequency
        encoderHiddenSize = try c.integer(.encoderHiddenSize) ?? d.encoderHiddenSize
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
    /// Only "opt" runs here; another decoder-only family (llama, ...) would load with OPT's layout and be wrong.
    public var modelType: String?

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size", hiddenSize = "hidden_size", numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads", ffnDim = "ffn_dim", maxPositionEmbeddings = "max_position_embeddings"
        case wordEmbedProjDim = "word_embed_proj_dim", doLayerNormBefore = "do_layer_norm_before"
        case removeFinalLayerNorm = "_remove_final_layer_norm", enableBias = "enable_bias"
        case layerNormElementwiseAffine = "layer_norm_elementwise_affine", activationFunction = "activation_function"
        case bosTokenId = "bos_token_id", eosTokenId = "eos_token_id", padTokenId = "pad_token_id"
        case tieWordEmbeddings = "tie_word_embeddings", modelType = "model_type"
    }

    public init() {}
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = Self()
        vocabSize = try c.integer(.vocabSize) ?? d.vocabSize
        hiddenSize = try c.integer(.hiddenSize) ?? d.hiddenSize
        numHiddenLayers = try c.integer(.numHiddenLayers) ?? d.numHiddenLayers
        numAttentionHeads = try c.integer(.numAttentionHeads) ?? d.numAttentionHeads
        ffnDim = try c.integer(.ffnDim) ?? d.ffnDim
        maxPositionEmbeddings = try c.integer(.maxPositionEmbeddings) ?? d.maxPositionEmbeddings
        wordEmbedProjDim = try c.integer(.wordEmbedProjDim)
        doLayerNormBefore = try c.decodeIfPresent(Bool.self, forKey: .doLayerNormBefore) ?? d.doLayerNormBefore
        removeFinalLayerNorm = try c.decodeIfPresent(Bool.self, forKey: .removeFinalLayerNorm) ?? d.removeFinalLayerNorm
        enableBias = try c.decodeIfPresent(Bool.self, forKey: .enableBias) ?? d.enableBias
        layerNormElementwiseAffine = try c.decodeIfPresent(Bool.self, forKey: .layerNormElementwiseAffine) ?? d.layerNormElementwiseAffine
        activationFunction = try c.decodeIfPresent(String.self, forKey: .activationFunction) ?? d.activationFunction
        bosTokenId = c.contains(.bosTokenId) ? try c.integer(.bosTokenId) : d.bosTokenId
        eosTokenId = c.contains(.eosTokenId) ? try c.firstInteger(.eosTokenId) : d.eosTokenId
        padTokenId = c.contains(.padTokenId) ? try c.integer(.padTokenId) : d.padTokenId
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? d.tieWordEmbeddings
        modelType = try c.decodeIfPresent(String.self, forKey: .modelType)
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
    /// Set when `text_config.model_type` is "t5" (BLIP-2 Flan-T5); `textConfig` is then unused.
    public var t5Config: T5Config?
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
        let textType = try? c.nestedContainer(keyedBy: T5Config.CodingKeys.self, forKey: .textConfig)
            .decodeIfPresent(String.self, forKey: .modelType)
        if textType == "t5" {
            t5Config = try c.decode(T5Config.self, forKey: .textConfig)
        } else {
            textConfig = try c.decodeIfPresent(OPTConfig.self, forKey: .textConfig) ?? OPTConfig()
        }
        // 4.x configs may carry the tie setting only at the top level.
        let textContainer = try? c.nestedContainer(keyedBy: OPTConfig.CodingKeys.self, forKey: .textConfig)
        if textContainer?.contains(.tieWordEmbeddings) != true,
           let topLevel = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) {
            textConfig.tieWordEmbeddings = topLevel
        }
        numQueryTokens = try c.integer(.numQueryTokens) ?? 32
        imageTokenIndex = try c.integer(.imageTokenIndex)
        useDecoderOnlyLanguageModel = try c.decodeIfPresent(Bool.self, forKey: .useDecoderOnlyLanguageModel) ?? true
        dtype = try c.decodeIfPresent(String.self, forKey: .dtype) ?? c.decodeIfPresent(String.self, forKey: .torchDtype)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(visionConfig, forKey: .visionConfig)
        try c.encode(qformerConfig, forKey: .qformerConfig)
        if let t5Config { try c.encode(t5Config, forKey: .textConfig) } else { try c.encode(textConfig, forKey: .textConfig) }
        try c.encode(numQueryTokens, forKey: .numQueryTokens)
        try c.encodeIfPresent(imageTokenIndex, forKey: .imageTokenIndex)
        try c.encode(useDecoderOnlyLanguageModel, forKey: .useDecoderOnlyLanguageModel)
        try c.encodeIfPresent(dtype, forKey: .dtype)
        try c.encode("blip-2", forKey: .modelType)
    }

    /// The language model's width (what language_projection maps the queries to), vocabulary and stop id.
    public var languageHiddenSize: Int { t5Config?.dModel ?? textConfig.hiddenSize }
    public var languageVocabSize: Int { t5Config?.vocabSize ?? textConfig.vocabSize }
    public var languageEOSTokenId: Int? { t5Config.map(\.eosTokenId) ?? textConfig.eosTokenId }
    public var languagePadTokenId: Int? { t5Config.map(\.padTokenId) ?? textConfig.padTokenId }

    /// Decodes the text of a Hugging Face `config.json` (types only: `check(storedElements:)` checks the
    /// values); `source` names it in errors.
    public static func decode(_ json: Data, source: String) throws -> Blip2Config {
        do { _ = try JSONSerialization.jsonObject(with: json) } catch {
            throw ConfigError("\(source): not valid JSON (\(error.localizedDescription))")
        }
        do { return try JSONDecoder().decode(Blip2Config.self, from: json) } catch let error as ConfigError {
            throw ConfigError("\(source): \(error.message)")
        } catch {
            throw ConfigError("\(source): not a valid BLIP-2 config (\(describe(error)))")
        }
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

extension KeyedDecodingContainer {
    /// `eos_token_id` may be a list in newer configs; generation stops at the first.
    func firstInteger(_ key: Key) throws -> Int? {
        if var list = try? nestedUnkeyedContainer(forKey: key) {
            guard !list.isAtEnd else { return nil }
            guard let first = try? list.decode(Int.self) else { throw ConfigError("text_config.\(key.stringValue) must be an integer or a list of integers") }
            return first
        }
        return try integer(key)
    }

    /// An optional integer. JSONDecoder calls a fraction or a number beyond 64 bits "not valid JSON"
    /// without naming the key; this names the key and the value instead.
    func integer(_ key: Key) throws -> Int? {
        guard contains(key), try !decodeNil(forKey: key) else { return nil }
        if let value = try? decode(Int.self, forKey: key) { return value }
        if let number = try? decode(Double.self, forKey: key) {
            let path = (codingPath + [key]).map(\.stringValue).joined(separator: ".")
            throw ConfigError("\(path) must be an integer, got \(number)")
        }
        return try decode(Int.self, forKey: key)   // the type mismatch, with its path
    }
}
