import Blip2Config
import Blip2ModelFile

// MARK: - Language: OPT decoder
//
// Input embeddings are the projected query outputs followed by embed_tokens rows; learned positions with
// OPT's offset of 2; pre-LN layers (q scaled by 1/sqrt(head_dim) before the product), causal attention
// over a KV cache; LN -> fc1 -> ReLU -> fc2; final_layer_norm; lm_head tied to embed_tokens unless stored.

final class LanguageModel {
    let config: OPTConfig
    let embedTokens: WeightMatrix                 // model.decoder.embed_tokens [vocab, embed_dim]
    let embedPositions: UnsafePointer<Float>      // model.decoder.embed_positions [max_positions + 2, hidden]
    let projectIn: Linear?                        // model.decoder.project_in [hidden, embed_dim] (only if embed_dim != hidden)
    let projectOut: Linear?                       // model.decoder.project_out [embed_dim, hidden]
    let layers: [Layer]
    let finalLayerNorm: LayerNormWeights?         // model.decoder.final_layer_norm
    let lmHead: Linear                            // lm_head [vocab, embed_dim] (= embed_tokens when tied)

    struct Layer {
        let selfAttentionNorm: LayerNormWeights   // self_attn_layer_norm
        let qProj, kProj, vProj, outProj: Linear  // self_attn.{q,k,v,out}_proj [hidden, hidden]
        let qkv: [Linear]                         // [qProj, kProj, vProj]: one product for the three
        let finalNorm: LayerNormWeights           // final_layer_norm
        let fc1: Linear                           // fc1 [ffn, hidden]
        let fc2: Linear                           // fc2 [hidden, ffn]
    }

    var hidden: Int { config.hiddenSize }
    var vocabSize: Int { config.vocabSize }
    var maxPositions: Int { config.maxPositionEmbeddings }

    init(config: OPTConfig, loader: WeightLoader, storage: inout [UnsafeMutablePointer<Float>]) throws {
        guard config.doLayerNormBefore else {
            throw ModelLoadError(message: "OPT with do_layer_norm_before = false (post-LN, as in opt-350m) is not supported")
        }
        self.config = config
        let h = config.hiddenSize, e = config.embeddingDim, bias = config.enableBias, affine = config.layerNormElementwiseAffine
        let d = "language_model.model.decoder"
        embedTokens = try loader.matrix("\(d).embed_tokens.weight", rows: config.vocabSize, cols: e)
        embedPositions = try loader.vector("\(d).embed_positions.weight", count: (config.maxPositionEmbeddings + OPTConfig.positionOffset) * h,
                                           shape: [config.maxPositionEmbeddings + OPTConfig.positionOffset, h], into: &storage)
        projectIn = e == h ? nil : try loader.linear("\(d).project_in", out: h, in: e, bias: false, into: &storage)
        projectOut = e == h ? nil : try loader.linear("\(d).project_out", out: e, in: h, bias: false, into: &storage)
        layers = try (0..<config.numHiddenLayers).map { i in
            let l = "\(d).layers.\(i)"
            let q = try loader.linear("\(l).self_attn.q_proj", out: h, in: h, bias: bias, into: &storage)
            let k = try loader.linear("\(l).self_attn.k_proj", out: h, in: h, bias: bias, into: &storage)
            let v = try loader.linear("\(l).self_attn.v_proj", out: h, in: h, bias: bias, into: &storage)
            return Layer(
                selfAttentionNorm: try loader.layerNorm("\(l).self_attn_layer_norm", dim: h, eps: 1e-5, affine: affine, into: &storage),
                qProj: q, kProj: k, vProj: v,
                outProj: try loader.linear("\(l).self_attn.out_proj", out: h, in: h, bias: bias, into: &storage),
                qkv: [q, k, v],
                finalNorm: try loader.layerNorm("\(l).final_layer_norm", dim: h, eps: 1e-5, affine: affine, into: &storage),
                fc1: try loader.linear("\(l).fc1", out: config.ffnDim, in: h, bias: bias, into: &storage),
                fc2: try loader.linear("\(l).fc2", out: h, in: config.ffnDim, bias: bias, into: &storage))
        }
        finalLayerNorm = config.hasFinalLayerNorm
            ? try loader.layerNorm("\(d).final_layer_norm", dim: h, eps: 1e-5, affine: affine, into: &storage) : nil
        let head = config.tieWordEmbeddings ? embedTokens : try loader.matrix(WeightManifest.outputHeadKey, rows: config.vocabSize, cols: e)
        lmHead = Linear(weight: head, bias: nil)
    }

    /// Token embedding rows (before project_in) for `ids` into `out` [ids.count, embed_dim].
    func embed(_ ids: [Int], into out: UnsafeMutablePointer<Float>) {
        for (i, id) in ids.enumerated() { embedTokens.dequantizeRow(id, into: out + i * embedTokens.cols) }
    }

    /// Runs `tokens` input embeddings [tokens, embed_dim] at positions cache.length..., appending to the
    /// cache; returns the logits of the last position.
    func forward(_ embeddings: UnsafePointer<Float>, tokens: Int, cache: KVCache, logits: UnsafeMutablePointer<Float>) {
        let h = hidden, start = cache.length
        precondition(start + tokens <= cache.capacity, "KV cache overflow is checked by the caller")
        let x = FloatBuffer(tokens * h)
        if let projectIn {
            MatMul.linear(embeddings, tokens: tokens, projectIn, into: x.pointer)
        } else {
            x.pointer.update(from: embeddings, count: tokens * h)
        }
        for t in 0..<tokens {
            Ops.add(x.pointer + t * h, embedPositions + (start + t + OPTConfig.positionOffset) * h, count: h)
        }
        let heads = config.numAttentionHeads, headDim = h / heads
        let scaling = 1 / Float(headDim).squareRoot()
        let normed = FloatBuffer(tokens * h), qkv = FloatBuffer(tokens * 3 * h), context = FloatBuffer(tokens * h)
        let ffn = FloatBuffer(tokens * config.ffnDim), scores = FloatBuffer(start + tokens)
        for (i, layer) in layers.enumerated() {
            normed.pointer.update(from: x.pointer, count: tokens * h)
            Ops.layerNorm(normed.pointer, tokens: tokens, layer.selfAttentionNorm)
            // qkv rows: [q (scaled below) | k | v], 3h wide.
            MatMul.linear(normed.pointer, tokens: tokens, concatenated: layer.qkv, into: qkv.pointer)
            for t in 0..<tokens {
                let row = qkv.pointer + t * 3 * h
                for j in 0..<h { row[j] *= scaling }
            }
            let keys = cache.keys(layer: i), values = cache.values(layer: i)
            cache.store(qkv.pointer + h, rowStride: 3 * h, tokens: tokens, at: start, into: keys)
            cache.store(qkv.pointer + 2 * h, rowStride: 3 * h, tokens: tokens, at: start, into: values)
            Ops.attention(q: qkv.pointer, qStride: 3 * h, queries: tokens, k: keys, v: values, kvStride: headDim, kvHeadStride: cache.headStride,
                          keys: start + tokens, heads: heads, headDim: headDim, scale: 1, causalOffset: start, out: context.pointer,
                          scores: scores.pointer)
            MatMul.linear(context.pointer, tokens: tokens, layer.outProj, into: normed.pointer)
            Ops.add(x.pointer, normed.pointer, count: tokens * h)

            normed.pointer.update(from: x.pointer, count: tokens * h)
            Ops.layerNorm(normed.pointer, tokens: tokens, layer.finalNorm)
            MatMul.linear(normed.pointer, tokens: tokens, layer.fc1, into: ffn.pointer)
            Ops.relu(ffn.pointer, count: tokens * config.ffnDim)
            MatMul.linear(ffn.pointer, tokens: tokens, layer.fc2, into: normed.pointer)
            Ops.add(x.pointer, normed.pointer, count: tokens * h)
        }
        cache.length = start + tokens
        let last = x.pointer + (tokens - 1) * h
        if let finalLayerNorm { Ops.layerNorm(last, tokens: 1, finalLayerNorm) }
        if let projectOut {
            let out = FloatBuffer(config.embeddingDim)
            MatMul.linear(last, tokens: 1, projectOut, into: out.pointer)
            MatMul.linear(out.pointer, tokens: 1, lmHead, into: logits)
        } else {
            MatMul.linear(last, tokens: 1, lmHead, into: logits)
        }
    }
}

/// Keys and values of every layer for the positions consumed so far.
///
/// Head-major: a layer's keys are `heads` blocks of [capacity, headDim] (`headStride` apart), and so are its
/// values, so the attention of one head while decoding reads one contiguous run of memory. (Rows of all
/// heads side by side had each head read 320 bytes out of every 10 KB at full size.)
public final class KVCache {
    public let layers: Int
    public let heads: Int
    public let headDim: Int
    public let capacity: Int
    public internal(set) var length = 0
    private let storage: UnsafeMutablePointer<Float>

    init(layers: Int, heads: Int, headDim: Int, capacity: Int) {
        self.layers = layers
        self.heads = heads
        self.headDim = headDim
        self.capacity = capacity
        storage = .allocate(capacity: max(1, 2 * layers * heads * capacity * headDim))
    }
    deinit { storage.deallocate() }

    /// Floats per position over all heads.
    public var width: Int { heads * headDim }
    /// Floats between the blocks of consecutive heads.
    var headStride: Int { capacity * headDim }

    func keys(layer: Int) -> UnsafeMutablePointer<Float> { storage + (2 * layer) * capacity * width }
    func values(layer: Int) -> UnsafeMutablePointer<Float> { storage + (2 * layer + 1) * capacity * width }

    /// Stores `tokens` rows of [heads * headDim] (`rowStride` apart) at positions `start...` of `block`
    /// (a layer's keys or values).
    func store(_ rows: UnsafePointer<Float>, rowStride: Int, tokens: Int, at start: Int, into block: UnsafeMutablePointer<Float>) {
        for h in 0..<heads {
            let head = block + h * headStride + start * headDim
            for t in 0..<tokens { (head + t * headDim).update(from: rows + t * rowStride + h * headDim, count: headDim) }
        }
    }

    /// A copy holding the same positions.
    func copy() -> KVCache {
        let other = KVCache(layers: layers, heads: heads, headDim: headDim, capacity: capacity)
        for block in 0..<(2 * layers * heads) {
            (other.storage + block * headStride).update(from: storage + block * headStride, count: length * headDim)
        }
        other.length = length
        return other
    }

    /// Forgets positions from `newLength` on (chat turns reuse the shared prefix).
    func truncate(to newLength: Int) {
        precondition(newLength <= length)
        length = newLength
    }
}
