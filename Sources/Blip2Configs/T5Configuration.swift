import Foundation

// MARK: - T5 (BLIP-2 Flan-T5's language model)
//
// Mirrors transformers' `T5Config` as `Blip2Config.text_config` holds it when `model_type` is "t5". Keys a
// config leaves out take T5Config's defaults.

public struct T5Config: Codable, Sendable, Equatable {
    public var vocabSize = 32128
    public var dModel = 512
    /// Width of one attention head; heads x d_kv need not equal d_model.
    public var dKv = 64
    public var dFf = 2048
    public var numLayers = 6
    /// Decoder blocks; T5Config makes it `num_layers` when unset.
    public var numDecoderLayers: Int?
    public var numHeads = 8
    public var relativeAttentionNumBuckets = 32
    public var relativeAttentionMaxDistance = 128
    public var layerNormEpsilon = 1e-6
    /// "relu" (original T5) or "gated-gelu" (T5 v1.1, Flan-T5).
    public var feedForwardProj = "relu"
    /// Whether the output head is `shared` (true) or a stored `lm_head.weight` (false). The converter writes
    /// it from what the checkpoint stores: transformers 5 ties unless the checkpoint holds its own lm_head,
    /// whatever the config says.
    public var tieWordEmbeddings = true
    /// Whether the decoder output is scaled by d_model ** -0.5 before the head. transformers 5 reads
    /// `scale_decoder_outputs` when the config has it, and otherwise scales unless `tie_word_embeddings`
    /// is false (original T5 scales; v1.1 and Flan-T5 configs say false and do not).
    public var scaleDecoderOutputs = true
    public var decoderStartTokenId = 0
    public var eosTokenId: Int? = 1
    public var padTokenId: Int? = 0
    public var modelType = "t5"

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size", dModel = "d_model", dKv = "d_kv", dFf = "d_ff", numLayers = "num_layers"
        case numDecoderLayers = "num_decoder_layers", numHeads = "num_heads"
        case relativeAttentionNumBuckets = "relative_attention_num_buckets"
        case relativeAttentionMaxDistance = "relative_attention_max_distance"
        case layerNormEpsilon = "layer_norm_epsilon", feedForwardProj = "feed_forward_proj"
        case tieWordEmbeddings = "tie_word_embeddings", scaleDecoderOutputs = "scale_decoder_outputs"
        case decoderStartTokenId = "decoder_start_token_id", eosTokenId = "eos_token_id", padTokenId = "pad_token_id"
        case modelType = "model_type"
    }

    public init() {}
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = Self()
        vocabSize = try c.integer(.vocabSize) ?? d.vocabSize
        dModel = try c.integer(.dModel) ?? d.dModel
        dKv = try c.integer(.dKv) ?? d.dKv
        dFf = try c.integer(.dFf) ?? d.dFf
        numLayers = try c.integer(.numLayers) ?? d.numLayers
        numDecoderLayers = try c.integer(.numDecoderLayers)
        numHeads = try c.integer(.numHeads) ?? d.numHeads
        relativeAttentionNumBuckets = try c.integer(.relativeAttentionNumBuckets) ?? d.relativeAttentionNumBuckets
        relativeAttentionMaxDistance = try c.integer(.relativeAttentionMaxDistance) ?? d.relativeAttentionMaxDistance
        layerNormEpsilon = try c.decodeIfPresent(Double.self, forKey: .layerNormEpsilon) ?? d.layerNormEpsilon
        feedForwardProj = try c.decodeIfPresent(String.self, forKey: .feedForwardProj) ?? d.feedForwardProj
        let tie = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings)
        tieWordEmbeddings = tie ?? d.tieWordEmbeddings
        scaleDecoderOutputs = try c.decodeIfPresent(Bool.self, forKey: .scaleDecoderOutputs) ?? (tie != false)
        decoderStartTokenId = try c.integer(.decoderStartTokenId) ?? c.integer(.padTokenId) ?? d.decoderStartTokenId
        eosTokenId = c.contains(.eosTokenId) ? try c.firstInteger(.eosTokenId) : d.eosTokenId
        padTokenId = c.contains(.padTokenId) ? try c.integer(.padTokenId) : d.padTokenId
        modelType = try c.decodeIfPresent(String.self, forKey: .modelType) ?? d.modelType
    }

    public var decoderLayers: Int { numDecoderLayers ?? numLayers }
    /// heads x d_kv: the width of q, k and v.
    public var innerDim: Int { numHeads * dKv }
    public var isGated: Bool { feedForwardProj.hasPrefix("gated-") }

    /// Checks every field the runtime sizes or branches on; `Blip2Config.validate` calls it.
    func validate(range: (String, Int, ClosedRange<Int>) throws -> Void) throws {
        typealias Limits = Blip2Config.Limits
        guard modelType == "t5" else { throw ConfigError("text_config.model_type is '\(modelType)'; only OPT and T5 language models are supported") }
        try range("text_config.vocab_size", vocabSize, 1...Limits.vocabulary)
        try range("text_config.d_model", dModel, 1...Limits.width)
        try range("text_config.num_heads", numHeads, 1...Limits.width)
        try range("text_config.d_kv", dKv, 1...Limits.width)
        guard innerDim <= Limits.width else {
            throw ConfigError("text_config.num_heads x d_kv (\(numHeads) x \(dKv)) must be at most \(Limits.width)")
        }
        try range("text_config.d_ff", dFf, 1...Limits.innerWidth)
        try range("text_config.num_layers", numLayers, 1...Limits.layers)
        try range("text_config.num_decoder_layers", decoderLayers, 1...Limits.layers)
        // The encoder halves the buckets (one half per direction) and keeps half of those exact, so fewer
        // than 4 leaves it no exact bucket: transformers would divide by zero.
        try range("text_config.relative_attention_num_buckets", relativeAttentionNumBuckets, 4...4096)
        // The logarithmic buckets span exact..max_distance; a distance within the exact ones divides by log(1) = 0.
        let exact = relativeAttentionNumBuckets / 2
        guard relativeAttentionMaxDistance > exact, relativeAttentionMaxDistance <= Limits.positions else {
            throw ConfigError("text_config.relative_attention_max_distance must be above \(exact) (half the \(relativeAttentionNumBuckets) buckets) and at most \(Limits.positions), got \(relativeAttentionMaxDistance)")
        }
        guard layerNormEpsilon.isFinite, Float(layerNormEpsilon) > 0, layerNormEpsilon < 1 else {
            throw ConfigError("text_config.layer_norm_epsilon must be a small positive number, got \(layerNormEpsilon)")
        }
        guard feedForwardProj == "relu" || feedForwardProj == "gated-gelu" else {
            throw ConfigError("text_config.feed_forward_proj '\(feedForwardProj)' is not supported (only relu and gated-gelu)")
        }
        for (name, id) in [("decoder_start_token_id", Optional(decoderStartTokenId)), ("eos_token_id", eosTokenId), ("pad_token_id", padTokenId)] {
            guard let id else { continue }
            guard id >= 0, id < vocabSize else { throw ConfigError("text_config.\(name) \(id) is outside the vocabulary (\(vocabSize) tokens)") }
        }
    }

    /// Multiply-adds (x2) and floats of a full encoder context plus as many decoded tokens: the encoder over
    /// every position, the decoder's self- and cross-attention and feed-forward, logits per step. Call after
    /// `validate`.
    func estimatedCost(queryTokens: Int, queryWidth: Int) throws -> (operations: Int, floats: Int) {
        typealias C = Checked
        let context = Blip2Config.Limits.context, d = dModel, inner = innerDim
        let ffnInputs = isGated ? 2 : 1
        let feedForward = try C.product(2, C.sum(C.product(ffnInputs, d, dFf), C.product(d, dFf)))
        let attention = try C.product(2, 4, d, inner)
        let encoderToken = try C.product(numLayers, C.sum(attention, feedForward, C.product(4, context, inner)))
        let decoderToken = try C.sum(C.product(decoderLayers, C.sum(attention, attention, feedForward, C.product(8, context, inner))),
                                     C.product(2, vocabSize, d))
        let crossKeys = try C.product(decoderLayers, context, 4, d, inner)
        let operations = try C.sum(C.product(context, C.sum(encoderToken, decoderToken)), crossKeys, C.product(2, queryTokens, queryWidth, d))
        let caches = try C.product(4, decoderLayers, context, inner)
        let floats = try C.sum(caches, C.product(context, C.sum(C.product(6, d), C.product(4, inner), C.product(2, dFf), context)), vocabSize)
        return (operations, floats)
    }
}

extension WeightManifest {
    /// T5's weights under `language_model.`: the shared embedding, the encoder and decoder stacks (the
    /// relative position bias only in each stack's first block, which computes it for all), their final
    /// norms, and lm_head when it is not `shared`. T5's norms have a weight and no bias; its projections no bias.
    static func t5Weights(_ t: T5Config) -> [WeightSpec] {
        var list: [WeightSpec] = []
        func add(_ name: String, _ shape: [Int], _ role: WeightRole) {
            list.append(WeightSpec(name: "language_model.\(name)", shape: shape, component: .language, role: role))
        }
        func attention(_ prefix: String, relativeBias: Bool) {
            for name in ["q", "k", "v"] { add("\(prefix).\(name).weight", [t.innerDim, t.dModel], .linearWeight) }
            add("\(prefix).o.weight", [t.dModel, t.innerDim], .linearWeight)
            if relativeBias { add("\(prefix).relative_attention_bias.weight", [t.relativeAttentionNumBuckets, t.numHeads], .positionEmbedding) }
        }
        func feedForward(_ prefix: String) {
            for name in t.isGated ? ["wi_0", "wi_1"] : ["wi"] { add("\(prefix).DenseReluDense.\(name).weight", [t.dFf, t.dModel], .linearWeight) }
            add("\(prefix).DenseReluDense.wo.weight", [t.dModel, t.dFf], .linearWeight)
            add("\(prefix).layer_norm.weight", [t.dModel], .normWeight)
        }
        add("shared.weight", [t.vocabSize, t.dModel], .tokenEmbedding)
        for i in 0..<t.numLayers {
            let p = "encoder.block.\(i).layer"
            attention("\(p).0.SelfAttention", relativeBias: i == 0)
            add("\(p).0.layer_norm.weight", [t.dModel], .normWeight)
            feedForward("\(p).1")
        }
        add("encoder.final_layer_norm.weight", [t.dModel], .normWeight)
        for i in 0..<t.decoderLayers {
            let p = "decoder.block.\(i).layer"
            attention("\(p).0.SelfAttention", relativeBias: i == 0)
            add("\(p).0.layer_norm.weight", [t.dModel], .normWeight)
            attention("\(p).1.EncDecAttention", relativeBias: false)
            add("\(p).1.layer_norm.weight", [t.dModel], .normWeight)
            feedForward("\(p).2")
        }
        add("decoder.final_layer_norm.weight", [t.dModel], .normWeight)
        if !t.tieWordEmbeddings { add("lm_head.weight", [t.vocabSize, t.dModel], .outputHead) }
        return list
    }

    public static let t5SharedKey = "language_model.shared.weight"
}
