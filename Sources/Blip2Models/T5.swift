import Blip2Compute
import Blip2Configs
import Blip2ModelFile
import Foundation

// MARK: - Language: T5 encoder-decoder (BLIP-2 Flan-T5)
//
// As transformers runs T5ForConditionalGeneration for BLIP-2:
//   encoder input = [projected query outputs, shared(prompt ids ending in </s>)], no position embeddings;
//   each encoder block: x += o(attn(rms(x))) with a bidirectional relative position bias, x += ffn(rms(x));
//   encoder output = rms(x) (final_layer_norm).
//   the decoder starts from decoder_start_token_id; each block: causal self-attention over its cache with a
//   causal relative bias, cross-attention over the encoder output (no bias; K/V computed once per prompt),
//   then the feed-forward; rms(x); times d_model ** -0.5 when the config scales; lm_head (or shared).
// T5 does not scale scores by 1/sqrt(d_kv) (its initialisation absorbed it); the bias is computed from the
// first block's table and shared by every block of the stack; the norm is RMS with a weight, no mean and
// no bias; the feed-forward is wo(relu(wi x)) or wo(gelu_new(wi_0 x) * wi_1 x).

final class T5Model {
    let config: T5Config
    let shared: WeightMatrix                  // language_model.shared.weight [vocab, d_model]
    let encoder: [EncoderBlock]               // language_model.encoder.block.{i}
    let encoderBias: UnsafePointer<Float>     // encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight [buckets, heads]
    let encoderFinalNorm: UnsafePointer<Float>  // encoder.final_layer_norm.weight [d_model]
    let decoder: [DecoderBlock]               // language_model.decoder.block.{i}
    let decoderBias: UnsafePointer<Float>     // decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight [buckets, heads]
    let decoderFinalNorm: UnsafePointer<Float>  // decoder.final_layer_norm.weight [d_model]
    let lmHead: Linear                        // lm_head.weight [vocab, d_model] (= shared when tied)
    /// d_model ** -0.5 when the config scales the decoder output, else 1.
    let outputScale: Float

    struct FeedForward {
        let norm: UnsafePointer<Float>        // layer.{n}.layer_norm.weight [d_model]
        let wi: [Linear]                      // DenseReluDense.wi [d_ff, d_model], or wi_0 and wi_1 (gated): one product
        let wo: Linear                        // DenseReluDense.wo [d_model, d_ff]
    }

    struct EncoderBlock {
        let selfNorm: UnsafePointer<Float>    // layer.0.layer_norm.weight [d_model]
        let qkv: [Linear]                     // layer.0.SelfAttention.{q,k,v} [heads * d_kv, d_model]: one product
        let o: Linear                         // layer.0.SelfAttention.o [d_model, heads * d_kv]
        let feedForward: FeedForward          // layer.1
    }

    struct DecoderBlock {
        let selfNorm: UnsafePointer<Float>    // layer.0.layer_norm.weight [d_model]
        let qkv: [Linear]                     // layer.0.SelfAttention.{q,k,v} [heads * d_kv, d_model]
        let o: Linear                         // layer.0.SelfAttention.o [d_model, heads * d_kv]
        let crossNorm: UnsafePointer<Float>   // layer.1.layer_norm.weight [d_model]
        let crossQ: Linear                    // layer.1.EncDecAttention.q [heads * d_kv, d_model]
        let crossKV: [Linear]                 // layer.1.EncDecAttention.{k,v} [heads * d_kv, d_model], over the encoder output
        let crossO: Linear                    // layer.1.EncDecAttention.o [d_model, heads * d_kv]
        let feedForward: FeedForward          // layer.2
    }

    var dModel: Int { config.dModel }
    var inner: Int { config.innerDim }
    var ffnWidth: Int { config.dFf * (config.isGated ? 2 : 1) }

    init(config: T5Config, loader: WeightLoader) throws {
        self.config = config
        let d = config.dModel, inner = config.innerDim, buckets = config.relativeAttentionNumBuckets, heads = config.numHeads
        let m = "language_model"
        func norm(_ key: String) throws -> UnsafePointer<Float> { try loader.vector("\(key).layer_norm.weight", count: d) }
        func projection(_ key: String, out: Int, in inputs: Int) throws -> Linear {
            try loader.linear(key, out: out, in: inputs, bias: false)
        }
        func attention(_ key: String) throws -> (qkv: [Linear], o: Linear) {
            (try ["q", "k", "v"].map { try projection("\(key).\($0)", out: inner, in: d) }, try projection("\(key).o", out: d, in: inner))
        }
        func feedForward(_ key: String) throws -> FeedForward {
            let inputs = config.isGated ? ["wi_0", "wi_1"] : ["wi"]
            return FeedForward(norm: try norm(key),
                               wi: try inputs.map { try projection("\(key).DenseReluDense.\($0)", out: config.dFf, in: d) },
                               wo: try projection("\(key).DenseReluDense.wo", out: d, in: config.dFf))
        }
        func relativeBias(_ stack: String) throws -> UnsafePointer<Float> {
            try loader.vector("\(m).\(stack).block.0.layer.0.SelfAttention.relative_attention_bias.weight", count: buckets * heads,
                              shape: [buckets, heads])
        }

        shared = try loader.matrix("\(m).shared.weight", rows: config.vocabSize, cols: d)
        encoder = try (0..<config.numLayers).map { i in
            let b = "\(m).encoder.block.\(i).layer"
            let attention = try attention("\(b).0.SelfAttention")
            return EncoderBlock(selfNorm: try norm("\(b).0"), qkv: attention.qkv, o: attention.o, feedForward: try feedForward("\(b).1"))
        }
        encoderBias = try relativeBias("encoder")
        encoderFinalNorm = try loader.vector("\(m).encoder.final_layer_norm.weight", count: d)
        decoder = try (0..<config.decoderLayers).map { i in
            let b = "\(m).decoder.block.\(i).layer"
            let selfAttention = try attention("\(b).0.SelfAttention")
            let cross = try attention("\(b).1.EncDecAttention")
            return DecoderBlock(selfNorm: try norm("\(b).0"), qkv: selfAttention.qkv, o: selfAttention.o,
                                crossNorm: try norm("\(b).1"), crossQ: cross.qkv[0], crossKV: Array(cross.qkv[1...]), crossO: cross.o,
                                feedForward: try feedForward("\(b).2"))
        }
        decoderBias = try relativeBias("decoder")
        decoderFinalNorm = try loader.vector("\(m).decoder.final_layer_norm.weight", count: d)
        lmHead = Linear(config.tieWordEmbeddings ? shared : try loader.matrix(WeightManifest.outputHeadKey, rows: config.vocabSize, cols: d),
                        bias: nil)
        outputScale = config.scaleDecoderOutputs ? 1 / Float(d).squareRoot() : 1
    }

    /// `shared` rows for `ids` into `out` [ids.count, d_model].
    func embed(_ ids: [Int], into out: UnsafeMutablePointer<Float>) {
        for (i, id) in ids.enumerated() { shared.dequantizeRow(id, into: out + i * dModel) }
    }

    // MARK: Encoder

    /// Runs the encoder over `tokens` input rows [tokens, d_model]; returns each decoder block's cross-attention
    /// keys and values over its output. The activations live for this call only (once per prompt).
    func encode(_ input: UnsafePointer<Float>, tokens: Int, compute: ComputeContext) -> T5CrossStates {
        let d = dModel, inner = self.inner, heads = config.numHeads
        let x = FloatBuffer(tokens * d), normed = FloatBuffer(tokens * d), qkv = FloatBuffer(tokens * 3 * inner)
        let context = FloatBuffer(tokens * inner), ffn = FloatBuffer(tokens * ffnWidth), scores = FloatBuffer(heads * tokens)
        x.pointer.update(from: input, count: tokens * d)
        // Bucket of every relative position key - query in -(tokens - 1)...(tokens - 1), at index + tokens - 1.
        let buckets = (-(tokens - 1)..<tokens).map {
            Self.bucket($0, bidirectional: true, buckets: config.relativeAttentionNumBuckets, maxDistance: config.relativeAttentionMaxDistance)
        }
        buckets.withUnsafeBufferPointer { buckets in
            let bias = RelativeBias(table: encoderBias, heads: heads, buckets: buckets.baseAddress! + (tokens - 1))
            for block in encoder {
                rmsNorm(x.pointer, tokens: tokens, block.selfNorm, into: normed.pointer)
                compute.linear(normed.pointer, tokens: tokens, concatenated: block.qkv, into: qkv.pointer)
                attention(q: qkv.pointer, qStride: 3 * inner, keys: qkv.pointer + inner, values: qkv.pointer + 2 * inner,
                          kvStride: 3 * inner, queries: tokens, keyCount: tokens, firstQuery: 0, causal: false, bias: bias,
                          scores: scores.pointer, out: context.pointer, compute: compute)
                compute.linear(context.pointer, tokens: tokens, block.o, into: normed.pointer)
                Ops.add(x.pointer, normed.pointer, count: tokens * d)
                feedForward(block.feedForward, x: x.pointer, tokens: tokens, normed: normed.pointer, ffn: ffn.pointer, compute: compute)
            }
        }
        rmsNorm(x.pointer, tokens: tokens, encoderFinalNorm, into: normed.pointer)
        let cross = T5CrossStates(layers: decoder.count, tokens: tokens, width: 2 * inner)
        for (i, block) in decoder.enumerated() {
            compute.linear(normed.pointer, tokens: tokens, concatenated: block.crossKV, into: cross.keysAndValues(layer: i))
        }
        return cross
    }

    // MARK: Decoder

    /// One decoder step: `token` at position `cache.length`, appended to the self-attention cache; writes the
    /// next token's logits.
    func decode(_ token: Int, cache: T5DecoderCache, cross: T5CrossStates, logits: UnsafeMutablePointer<Float>, compute: ComputeContext) {
        precondition(cache.length < cache.capacity, "decoder cache overflow is checked by the caller")
        let d = dModel, inner = self.inner, heads = config.numHeads, position = cache.length
        let s = cache.scratch
        let x = s.x.pointer, normed = s.normed.pointer, qkv = s.qkv.pointer, context = s.context.pointer
        shared.dequantizeRow(token, into: x)
        for j in 0...position {
            cache.buckets.pointer[j] = Self.bucket(j - position, bidirectional: false, buckets: config.relativeAttentionNumBuckets,
                                                   maxDistance: config.relativeAttentionMaxDistance)
        }
        let bias = RelativeBias(table: decoderBias, heads: heads, buckets: UnsafePointer(cache.buckets.pointer + position))
        for (i, block) in decoder.enumerated() {
            // Self-attention: this position's k and v join the cache, rows of [k | v].
            rmsNorm(x, tokens: 1, block.selfNorm, into: normed)
            compute.linear(normed, tokens: 1, concatenated: block.qkv, into: qkv)
            let rows = cache.keysAndValues(layer: i)
            (rows + position * 2 * inner).update(from: qkv + inner, count: 2 * inner)
            attention(q: qkv, qStride: 3 * inner, keys: rows, values: rows + inner, kvStride: 2 * inner, queries: 1,
                      keyCount: position + 1, firstQuery: position, causal: true, bias: bias, scores: s.scores.pointer,
                      out: context, compute: compute)
            compute.linear(context, tokens: 1, block.o, into: normed)
            Ops.add(x, normed, count: d)

            // Cross-attention over the encoder output.
            rmsNorm(x, tokens: 1, block.crossNorm, into: normed)
            compute.linear(normed, tokens: 1, block.crossQ, into: qkv)
            let encoded = cross.keysAndValues(layer: i)
            attention(q: qkv, qStride: inner, keys: encoded, values: encoded + inner, kvStride: 2 * inner, queries: 1,
                      keyCount: cross.tokens, firstQuery: 0, causal: false, bias: nil, scores: s.crossScores.pointer,
                      out: context, compute: compute)
            compute.linear(context, tokens: 1, block.crossO, into: normed)
            Ops.add(x, normed, count: d)

            feedForward(block.feedForward, x: x, tokens: 1, normed: normed, ffn: s.ffn.pointer, compute: compute)
        }
        cache.length = position + 1
        rmsNorm(x, tokens: 1, decoderFinalNorm, into: normed)
        if outputScale != 1 { for j in 0..<d { normed[j] *= outputScale } }
        compute.linear(normed, tokens: 1, lmHead, into: logits)
    }

    // MARK: Pieces

    /// x += wo(act(wi rms(x))): relu, or gelu_new(wi_0) * wi_1 when gated.
    private func feedForward(_ f: FeedForward, x: UnsafeMutablePointer<Float>, tokens: Int, normed: UnsafeMutablePointer<Float>,
                             ffn: UnsafeMutablePointer<Float>, compute: ComputeContext) {
        let width = config.dFf
        rmsNorm(x, tokens: tokens, f.norm, into: normed)
        compute.linear(normed, tokens: tokens, concatenated: f.wi, into: ffn)
        if config.isGated {
            // Rows of [wi_0 x | wi_1 x] become rows of gelu_new(wi_0 x) * wi_1 x, packed [tokens, d_ff] in place.
            for t in 0..<tokens {
                let row = ffn + t * 2 * width, packed = ffn + t * width
                for j in 0..<width { packed[j] = Self.geluTanh(row[j]) * row[width + j] }
            }
        } else {
            Ops.relu(ffn, count: tokens * width)
        }
        compute.linear(ffn, tokens: tokens, f.wo, into: normed)
        Ops.add(x, normed, count: tokens * dModel)
    }

    /// T5LayerNorm: x / sqrt(mean(x²) + eps) * weight, no mean subtracted and no bias.
    private func rmsNorm(_ x: UnsafePointer<Float>, tokens: Int, _ weight: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        let d = dModel, eps = Float(config.layerNormEpsilon)
        for t in 0..<tokens {
            let row = x + t * d, result = out + t * d
            let meanSquare = Float(Ops.dot(row, row, d) / Float(d))
            let scale = 1 / (meanSquare + eps).squareRoot()
            for j in 0..<d { result[j] = weight[j] * (row[j] * scale) }
        }
    }

    /// gelu_new: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x³))).
    @inline(__always)
    static func geluTanh(_ x: Float) -> Float {
        0.5 * x * (1 + tanh(Float((2 / Double.pi).squareRoot()) * (x + 0.044715 * (x * x * x))))
    }

    /// The relative position bias of one stack: `table` [buckets, heads] and the bucket of each relative
    /// position (key - query), `buckets[relative]`.
    struct RelativeBias {
        let table: UnsafePointer<Float>
        let heads: Int
        let buckets: UnsafePointer<Int>
        @inline(__always) func value(head: Int, relative: Int) -> Float { table[buckets[relative] * heads + head] }
    }

    /// out[i, head h] = sum_j softmax_j(q_i . k_j + bias(h, j - (firstQuery + i))) v_j, without T5 scaling the
    /// scores; causal queries see keys up to their own position. Heads run in parallel, each with its own
    /// row of `scores` (heads x keyCount floats).
    private func attention(q: UnsafePointer<Float>, qStride: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                           kvStride: Int, queries: Int, keyCount: Int, firstQuery: Int, causal: Bool, bias: RelativeBias?,
                           scores: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>, compute: ComputeContext) {
        let dKv = config.dKv, inner = self.inner
        // Each part writes the columns of its own heads in `out` and its own heads' rows of `scores`.
        compute.forChunks(count: config.numHeads, minimum: max(1, (1 << 14) / max(1, queries * keyCount * dKv))) { heads in
            for h in heads {
                let row = scores + h * keyCount
                for i in 0..<queries {
                    let visible = causal ? min(keyCount, firstQuery + i + 1) : keyCount
                    let qi = q + i * qStride + h * dKv
                    for j in 0..<visible {
                        var score = Ops.dot(qi, keys + j * kvStride + h * dKv, dKv)
                        if let bias { score += bias.value(head: h, relative: j - (firstQuery + i)) }
                        row[j] = score
                    }
                    compute.softmax(row, count: visible)
                    let o = out + i * inner + h * dKv
                    o.update(repeating: 0, count: dKv)
                    for j in 0..<visible { Ops.addScaled(o, row[j], values + j * kvStride + h * dKv, dKv) }
                }
            }
        }
    }

    /// transformers' `T5Attention._relative_position_bucket`, in its float32 arithmetic: half the buckets (per
    /// direction when bidirectional) for exact distances, the rest logarithmic up to `maxDistance`.
    static func bucket(_ relative: Int, bidirectional: Bool, buckets: Int, maxDistance: Int) -> Int {
        var count = buckets, base = 0, distance = relative
        if bidirectional {
            count /= 2
            if relative > 0 { base = count }
            distance = abs(relative)
        } else {
            distance = -min(relative, 0)
        }
        let exact = count / 2
        if distance < exact { return base + distance }
        let logarithmic = log(Float(distance) / Float(exact)) / Float(log(Double(maxDistance) / Double(exact))) * Float(count - exact)
        return base + min(exact + Int(logarithmic), count - 1)
    }
}

/// The decoder blocks' cross-attention keys and values over one prompt's encoder output: per block, rows of
/// [k | v] (2 x heads x d_kv floats) for every encoder position. Written once, then only read, so forks of a
/// session share it.
final class T5CrossStates: @unchecked Sendable {
    let layers: Int
    let tokens: Int
    let width: Int
    private let storage: FloatBuffer

    init(layers: Int, tokens: Int, width: Int) {
        self.layers = layers
        self.tokens = tokens
        self.width = width
        storage = FloatBuffer(layers * tokens * width)
    }

    func keysAndValues(layer: Int) -> UnsafeMutablePointer<Float> { storage.pointer + layer * tokens * width }
}

/// The decoder's self-attention cache (per block, rows of [k | v] for every position decoded so far) and the
/// activations of one step, allocated once per session: decoding a token allocates nothing.
final class T5DecoderCache {
    let capacity: Int
    let width: Int
    let layers: Int
    var length = 0
    private let storage: FloatBuffer
    /// Relative-position buckets of the current step's keys.
    let buckets: IntBuffer
    let scratch: Scratch

    struct Scratch {
        let x: FloatBuffer                    // [d_model]: the residual stream
        let normed: FloatBuffer               // [d_model]
        let qkv: FloatBuffer                  // [3 * heads * d_kv]
        let context: FloatBuffer              // [heads * d_kv]
        let ffn: FloatBuffer                  // [d_ff, or 2 * d_ff when gated]
        let scores: FloatBuffer               // [heads, capacity]
        let crossScores: FloatBuffer          // [heads, encoder tokens]
    }

    init(model: T5Model, capacity: Int, encoderTokens: Int) {
        self.capacity = capacity
        width = 2 * model.inner
        layers = model.decoder.count
        storage = FloatBuffer(layers * capacity * width)
        buckets = IntBuffer(capacity)
        let heads = model.config.numHeads
        scratch = Scratch(x: FloatBuffer(model.dModel), normed: FloatBuffer(model.dModel), qkv: FloatBuffer(3 * model.inner),
                          context: FloatBuffer(model.inner), ffn: FloatBuffer(model.ffnWidth), scores: FloatBuffer(heads * capacity),
                          crossScores: FloatBuffer(heads * encoderTokens))
    }

    func keysAndValues(layer: Int) -> UnsafeMutablePointer<Float> { storage.pointer + layer * capacity * width }

    /// A copy holding the same positions, with activations of its own.
    func copy(model: T5Model, encoderTokens: Int) -> T5DecoderCache {
        let other = T5DecoderCache(model: model, capacity: capacity, encoderTokens: encoderTokens)
        for layer in 0..<layers { other.keysAndValues(layer: layer).update(from: keysAndValues(layer: layer), count: length * width) }
        other.length = length
        return other
    }
}

/// A heap buffer of Ints, freed with its owner.
final class IntBuffer {
    let pointer: UnsafeMutablePointer<Int>
    init(_ count: Int) {
        pointer = .allocate(capacity: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
    }
    deinit { pointer.deallocate() }
}

// MARK: - A T5 generation

/// One prompt through the encoder, then the decoder token by token: `logits` is always for the next token.
/// Starts with the decoder fed `decoder_start_token_id`, as transformers' `generate` does.
// @unchecked Sendable: one sequence's caches, used by one generation at a time; the cross states are read-only.
public final class T5Session: @unchecked Sendable {
    let model: Blip2Model
    let t5: T5Model
    let cross: T5CrossStates
    let cache: T5DecoderCache
    public private(set) var logits: [Float]

    init(model: Blip2Model, t5: T5Model, encoderInput: [Float], capacity: Int) throws {
        let tokens = encoderInput.count / t5.dModel
        guard tokens > 0, tokens * t5.dModel == encoderInput.count else {
            throw ModelLoadError(message: "the encoder input has \(encoderInput.count) values, not rows of \(t5.dModel)")
        }
        guard capacity >= 1 else { throw ModelLoadError(message: "the decoder needs room for at least its start token") }
        self.model = model
        self.t5 = t5
        cross = encoderInput.withUnsafeBufferPointer { t5.encode($0.baseAddress!, tokens: tokens, compute: model.compute) }
        cache = T5DecoderCache(model: t5, capacity: capacity, encoderTokens: tokens)
        logits = [Float](repeating: 0, count: t5.config.vocabSize)
        try append(t5.config.decoderStartTokenId)
    }

    private init(copying other: T5Session) {
        model = other.model
        t5 = other.t5
        cross = other.cross
        cache = other.cache.copy(model: other.t5, encoderTokens: other.cross.tokens)
        logits = other.logits
    }

    /// The id the decoder started from (decoder_start_token_id).
    public var startTokenId: Int { t5.config.decoderStartTokenId }

    /// Decoder positions used so far (the start token included), and how many fit.
    public var length: Int { cache.length }
    public var capacity: Int { cache.capacity }
    /// Encoder positions of the prompt.
    public var encoderTokens: Int { cross.tokens }

    /// Bytes of a session whose encoder input and decoder both hold `capacity` positions: the cross K/V and
    /// the decoder's own cache (what a kept chat session costs).
    static func cacheBytes(_ t5: T5Model, capacity: Int) -> Int {
        2 * t5.decoder.count * capacity * 2 * t5.inner * MemoryLayout<Float>.stride
    }

    /// Feeds one token to the decoder; `logits` becomes the next token's.
    public func append(_ token: Int) throws {
        guard token >= 0, token < t5.config.vocabSize else {
            throw ModelLoadError(message: "token id \(token) is outside the vocabulary (\(t5.config.vocabSize))")
        }
        guard cache.length < cache.capacity else {
            throw ModelLoadError(message: "the decoder holds \(cache.capacity) tokens; no room for another")
        }
        logits.withUnsafeMutableBufferPointer { out in
            t5.decode(token, cache: cache, cross: cross, logits: out.baseAddress!, compute: model.compute)
        }
    }

    /// An independent continuation (own self-attention cache; the encoder's states are shared).
    public func fork() -> T5Session { T5Session(copying: self) }
}

extension Blip2Model {
    /// Whether the language model is T5 (an encoder-decoder): generation then goes through `makeT5Session`.
    public var isEncoderDecoder: Bool { t5 != nil }

    /// Encodes `encoderInput` [tokens, d_model] (the projected queries, then the prompt's token embeddings) and
    /// starts the decoder; `decoderCapacity` counts the start token and every token fed after it.
    public func makeT5Session(encoderInput: [Float], decoderCapacity: Int) throws -> T5Session {
        guard let t5 else { throw ModelLoadError(message: "\(file.path): the language model is OPT, not T5") }
        return try T5Session(model: self, t5: t5, encoderInput: encoderInput, capacity: decoderCapacity)
    }
}
