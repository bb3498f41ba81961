// MARK: - Validation
//
// A config.json arrives in a checkpoint or a model file that anyone can edit (and a model file's
// checksums are easy to recompute), so no value is trusted before it is checked: every range and
// divisibility first, then the work and memory the configuration implies, against the weights the file
// or checkpoint actually stores. A huge layer count or image size therefore becomes an error naming the
// field, never an allocation, a trap or an endless loop. All products are overflow-checked.

extension Blip2Config {
    /// Ceilings far above any released BLIP-2 (ViT-g: 39 layers of 1408; OPT-6.7B: 32 layers of 4096,
    /// ffn 16384) that keep the weight manifest small and every size product far below 2^63.
    public enum Limits {
        public static let layers = 1024
        public static let width = 1 << 16
        public static let innerWidth = 1 << 18
        public static let vocabulary = 1 << 22
        public static let positions = 1 << 20
        public static let imageSize = 1 << 14
        public static let queryTokens = 1 << 12
        /// Longest context the runtime runs (Pipeline.defaultContextLimit); costs are estimated for it.
        public static let context = 512
        /// Work and memory may grow with the stored weights (a bigger file is a bigger model), but a small
        /// file must not ask for unbounded work: at most this many operations per stored weight, plus
        /// `baseOperations`. blip2-opt-2.7b needs about 900 (257 image tokens through the vision tower,
        /// 512 context tokens through OPT).
        public static let operationsPerWeight = 4096
        public static let baseOperations = 16_000_000_000
        /// Activations and KV cache at most the weights' own f32 size plus this.
        public static let baseActivationBytes = 512 << 20
    }

    /// Checks every value against the ranges and relations the runtime needs. Cheap; no allocation sized
    /// from the config happens before it.
    public func validate() throws {
        guard useDecoderOnlyLanguageModel == (t5Config == nil) else {
            throw ConfigError(t5Config == nil
                ? "use_decoder_only_language_model is false but text_config is not a T5 (encoder-decoder) model; only OPT and T5 language models are supported"
                : "text_config is a T5 (encoder-decoder) model but use_decoder_only_language_model is true")
        }
        let v = visionConfig, q = qformerConfig, t = textConfig
        func range(_ name: String, _ value: Int, _ bounds: ClosedRange<Int>) throws {
            guard bounds.contains(value) else {
                throw ConfigError("\(name) must be between \(bounds.lowerBound) and \(bounds.upperBound), got \(value)")
            }
        }
        func heads(_ prefix: String, hidden: Int, heads: Int) throws {
            try range("\(prefix).num_attention_heads", heads, 1...hidden)
            guard hidden % heads == 0 else {
                throw ConfigError("\(prefix).hidden_size \(hidden) is not divisible by num_attention_heads \(heads)")
            }
        }
        func epsilon(_ name: String, _ value: Double) throws {
            // Positive as a Float, which the layer norms add it as: 0 would divide by zero on a constant row.
            guard value.isFinite, Float(value) > 0, value < 1 else { throw ConfigError("\(name) must be a small positive number, got \(value)") }
        }
        func tokenId(_ name: String, _ value: Int?) throws {
            guard let value else { return }
            let vocabulary = languageVocabSize
            guard value >= 0, value < vocabulary else { throw ConfigError("\(name) \(value) is outside the vocabulary (\(vocabulary) tokens)") }
        }

        try range("vision_config.hidden_size", v.hiddenSize, 1...Limits.width)
        try range("vision_config.intermediate_size", v.intermediateSize, 1...Limits.innerWidth)
        try range("vision_config.num_hidden_layers", v.numHiddenLayers, 1...Limits.layers)
        try heads("vision_config", hidden: v.hiddenSize, heads: v.numAttentionHeads)
        try range("vision_config.image_size", v.imageSize, 1...Limits.imageSize)
        try range("vision_config.patch_size", v.patchSize, 1...v.imageSize)
        guard v.imageSize % v.patchSize == 0 else {
            throw ConfigError("vision_config.image_size \(v.imageSize) is not a multiple of patch_size \(v.patchSize)")
        }
        guard v.numChannels == 3 else { throw ConfigError("vision_config.num_channels must be 3 (RGB), got \(v.numChannels)") }
        try epsilon("vision_config.layer_norm_eps", v.layerNormEps)

        try range("qformer_config.hidden_size", q.hiddenSize, 1...Limits.width)
        try range("qformer_config.intermediate_size", q.intermediateSize, 1...Limits.innerWidth)
        try range("qformer_config.num_hidden_layers", q.numHiddenLayers, 1...Limits.layers)
        try heads("qformer_config", hidden: q.hiddenSize, heads: q.numAttentionHeads)
        try range("qformer_config.cross_attention_frequency", q.crossAttentionFrequency, 1...Limits.layers)
        guard q.encoderHiddenSize == v.hiddenSize else {
            throw ConfigError("qformer_config.encoder_hidden_size \(q.encoderHiddenSize) differs from vision_config.hidden_size \(v.hiddenSize): the Q-Former attends to the vision tower's output")
        }
        try epsilon("qformer_config.layer_norm_eps", q.layerNormEps)
        try range("num_query_tokens", numQueryTokens, 1...Limits.queryTokens)

        try tokenId("image_token_index", imageTokenIndex)
        guard v.hiddenAct == "gelu", q.hiddenAct == "gelu" else {
            throw ConfigError("only the exact (erf) GELU activation is supported in the vision model and Q-Former (hidden_act '\(v.hiddenAct)', '\(q.hiddenAct)')")
        }
        if let t5Config { return try t5Config.validate(range: range) }
        if let type = t.modelType, type != "opt" {
            throw ConfigError("text_config.model_type is '\(type)'; only OPT and T5 language models are supported")
        }
        try range("text_config.vocab_size", t.vocabSize, 1...Limits.vocabulary)
        try range("text_config.hidden_size", t.hiddenSize, 1...Limits.width)
        try range("text_config.ffn_dim", t.ffnDim, 1...Limits.innerWidth)
        try range("text_config.num_hidden_layers", t.numHiddenLayers, 1...Limits.layers)
        try heads("text_config", hidden: t.hiddenSize, heads: t.numAttentionHeads)
        try range("text_config.max_position_embeddings", t.maxPositionEmbeddings, 1...Limits.positions)
        if let width = t.wordEmbedProjDim { try range("text_config.word_embed_proj_dim", width, 1...Limits.width) }
        try tokenId("text_config.eos_token_id", t.eosTokenId)
        try tokenId("text_config.bos_token_id", t.bosTokenId)
        try tokenId("text_config.pad_token_id", t.padTokenId)
        guard t.activationFunction == "relu" else { throw ConfigError("text_config.activation_function '\(t.activationFunction)' is not supported (only relu)") }
    }

    /// `validate`, then the budget: the work and memory of one image plus a full context must stay within
    /// `Limits` of the weights the model file or checkpoint stores. (Whether each implied weight is there,
    /// with its shape, is for the converter's plan and the model loader, which name the missing tensor.)
    ///
    /// - Parameter storedElements: weight values the model file or checkpoint holds, summed over its tensors.
    public func check(storedElements: Int) throws {
        try validate()
        let cost = try estimatedCost()
        let stored = max(storedElements, 0)
        let operationCeiling = try Checked.sum(Limits.baseOperations, Checked.product(Limits.operationsPerWeight, stored))
        guard cost.operations <= operationCeiling else {
            throw ConfigError("the config implies \(cost.operations) operations per image, more than the \(operationCeiling) allowed for the \(stored) weight values stored: its sizes (image_size, patch_size, hidden sizes, layer counts) do not fit the weights")
        }
        let memoryCeiling = try Checked.sum(Limits.baseActivationBytes, Checked.product(4, stored))
        guard cost.activationBytes <= memoryCeiling else {
            throw ConfigError("the config implies \(cost.activationBytes) bytes of activations, more than the \(memoryCeiling) allowed for the \(stored) weight values stored: its sizes do not fit the weights")
        }
    }

    /// What running one image and a full context costs, roughly: the runtime's buffers and its multiply-adds
    /// (x2), from the shapes alone. Call after `validate`.
    public struct RuntimeCost: Sendable, Equatable {
        public var operations: Int
        public var activationBytes: Int
    }

    public func estimatedCost() throws -> RuntimeCost {
        typealias C = Checked
        let v = visionConfig, q = qformerConfig, t = textConfig
        // Vision: patches -> [tokens, hidden] through every layer (fused qkv, MLP, full attention).
        let patches = try C.product(v.imageSize / v.patchSize, v.imageSize / v.patchSize)
        let tokens = patches + 1
        let patchWidth = try C.product(v.numChannels, v.patchSize, v.patchSize)
        let h = v.hiddenSize
        let visionLayer = try C.sum(C.product(2, tokens, C.sum(C.product(4, h, h), C.product(2, h, v.intermediateSize))),
                                    C.product(4, tokens, tokens, h))
        let visionOps = try C.sum(C.product(2, patches, patchWidth, h), C.product(v.numHiddenLayers, visionLayer))
        let visionFloats = try C.sum(C.product(patches, patchWidth), C.product(tokens, C.sum(C.product(6, h), v.intermediateSize)))

        // Q-Former: the query tokens through self- and cross-attention (keys from every image token).
        let n = numQueryTokens, hq = q.hiddenSize, keyRows = max(n, tokens)
        let qformerLayer = try C.sum(C.product(2, n, C.sum(C.product(6, hq, hq), C.product(2, hq, q.intermediateSize))),
                                     C.product(4, tokens, hq, h), C.product(4, n, keyRows, hq))
        let qformerOps = try C.product(q.numHiddenLayers, qformerLayer)
        let qformerFloats = try C.sum(C.product(5, n, hq), C.product(2, keyRows, hq), C.product(n, q.intermediateSize), keyRows)

        if let t5 = t5Config {
            let (languageOps, languageFloats) = try t5.estimatedCost(queryTokens: n, queryWidth: hq)
            return RuntimeCost(operations: try C.sum(visionOps, qformerOps, languageOps),
                               activationBytes: try C.product(4, C.sum(visionFloats, qformerFloats, languageFloats)))
        }
        // OPT: every context token through every layer, attention over the cache, logits per step.
        let context = min(t.maxPositionEmbeddings, Limits.context), ht = t.hiddenSize
        let perToken = try C.sum(C.product(t.numHiddenLayers, C.sum(C.product(8, ht, ht), C.product(4, ht, t.ffnDim), C.product(4, context, ht))),
                                 C.product(2, t.vocabSize, t.embeddingDim), C.product(4, ht, t.embeddingDim))
        let languageOps = try C.sum(C.product(context, perToken), C.product(2, n, hq, ht))
        let cache = try C.product(2, t.numHiddenLayers, context, ht)
        // Prefill buffers, one logits row per step (kept for --dump-logits) and the cache.
        let languageFloats = try C.sum(cache, C.product(context, C.sum(C.product(6, ht), t.ffnDim, t.vocabSize)))

        return RuntimeCost(operations: try C.sum(visionOps, qformerOps, languageOps),
                           activationBytes: try C.product(4, C.sum(visionFloats, qformerFloats, languageFloats)))
    }
}

/// Overflow-checked arithmetic on sizes: an overflow is a config error, never a trap.
enum Checked {
    static func product(_ values: Int...) throws -> Int {
        try values.reduce(1) { total, value in
            let (result, overflow) = total.multipliedReportingOverflow(by: value)
            guard !overflow, value >= 0 else { throw ConfigError("the config's sizes overflow 64-bit arithmetic") }
            return result
        }
    }

    static func sum(_ values: Int...) throws -> Int {
        try values.reduce(0) { total, value in
            let (result, overflow) = total.addingReportingOverflow(value)
            guard !overflow else { throw ConfigError("the config's sizes overflow 64-bit arithmetic") }
            return result
        }
    }
}
