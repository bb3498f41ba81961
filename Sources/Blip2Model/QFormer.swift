import Blip2Config
import Blip2ModelFile

// MARK: - Q-Former (BERT-style, post-LN)
//
// The learned query tokens pass through `layernorm`, then each layer: self-attention, cross-attention to
// the image on every `cross_attention_frequency`-th layer, and the query feed-forward
// (`intermediate_query` / `output_query`; the text feed-forward is never used for images).

final class QFormerModel {
    let config: Blip2QFormerConfig
    let numQueryTokens: Int
    let queryTokens: UnsafePointer<Float>    // query_tokens [1, queries, hidden]
    let layerNorm: LayerNormWeights          // qformer.layernorm
    let layers: [Layer]

    struct Attention {
        let query: Linear                     // attention.query [hidden, hidden]
        let key: Linear                       // attention.key [hidden, hidden or encoder_hidden]
        let value: Linear                     // attention.value
        let outputDense: Linear               // output.dense [hidden, hidden]
        let outputNorm: LayerNormWeights      // output.LayerNorm
    }

    struct Layer {
        let selfAttention: Attention          // qformer.encoder.layer.N.attention.*
        let crossAttention: Attention?        // qformer.encoder.layer.N.crossattention.*
        let intermediate: Linear              // intermediate_query.dense [intermediate, hidden]
        let output: Linear                    // output_query.dense [hidden, intermediate]
        let outputNorm: LayerNormWeights      // output_query.LayerNorm
    }

    init(config: Blip2Config, loader: WeightLoader, storage: inout [UnsafeMutablePointer<Float>]) throws {
        let q = config.qformerConfig
        self.config = q
        numQueryTokens = config.numQueryTokens
        let h = q.hiddenSize, eps = q.layerNormEps
        queryTokens = try loader.vector("query_tokens", count: numQueryTokens * h, shape: [1, numQueryTokens, h], into: &storage)
        layerNorm = try loader.layerNorm("qformer.layernorm", dim: h, eps: eps, into: &storage)
        func attention(_ prefix: String, keyWidth: Int) throws -> Attention {
            Attention(query: try loader.linear("\(prefix).attention.query", out: h, in: h, into: &storage),
                      key: try loader.linear("\(prefix).attention.key", out: h, in: keyWidth, into: &storage),
                      value: try loader.linear("\(prefix).attention.value", out: h, in: keyWidth, into: &storage),
                      outputDense: try loader.linear("\(prefix).output.dense", out: h, in: h, into: &storage),
                      outputNorm: try loader.layerNorm("\(prefix).output.LayerNorm", dim: h, eps: eps, into: &storage))
        }
        layers = try (0..<q.numHiddenLayers).map { i in
            let l = "qformer.encoder.layer.\(i)"
            return Layer(
                selfAttention: try attention("\(l).attention", keyWidth: h),
                crossAttention: q.hasCrossAttention(layer: i) ? try attention("\(l).crossattention", keyWidth: q.encoderHiddenSize) : nil,
                intermediate: try loader.linear("\(l).intermediate_query.dense", out: q.intermediateSize, in: h, into: &storage),
                output: try loader.linear("\(l).output_query.dense", out: h, in: q.intermediateSize, into: &storage),
                outputNorm: try loader.layerNorm("\(l).output_query.LayerNorm", dim: h, eps: eps, into: &storage))
        }
    }

    /// image: [imageTokens, encoder_hidden] -> last_hidden_state [queries, hidden].
    func forward(image: UnsafePointer<Float>, imageTokens: Int) -> FloatBuffer {
        let h = config.hiddenSize, n = numQueryTokens
        let heads = config.numAttentionHeads, headDim = h / heads
        let scale = 1 / Float(headDim).squareRoot()
        let x = FloatBuffer(n * h)
        x.pointer.update(from: queryTokens, count: n * h)
        Ops.layerNorm(x.pointer, tokens: n, layerNorm)

        let keyRows = max(n, imageTokens)
        let q = FloatBuffer(n * h), k = FloatBuffer(keyRows * h), v = FloatBuffer(keyRows * h)
        let context = FloatBuffer(n * h), projected = FloatBuffer(n * h)
        let hidden = FloatBuffer(n * config.intermediateSize), scores = FloatBuffer(keyRows)

        // BERT attention block: LayerNorm(x + dense(attention(x, source))).
        func attend(_ block: Attention, source: UnsafePointer<Float>, sourceTokens: Int) {
            MatMul.linear(x.pointer, tokens: n, block.query, into: q.pointer)
            MatMul.linear(source, tokens: sourceTokens, block.key, into: k.pointer)
            MatMul.linear(source, tokens: sourceTokens, block.value, into: v.pointer)
            Ops.attention(q: q.pointer, qStride: h, queries: n, k: k.pointer, v: v.pointer, kvStride: h, keys: sourceTokens,
                          heads: heads, headDim: headDim, scale: scale, causalOffset: nil, out: context.pointer, scores: scores.pointer)
            MatMul.linear(context.pointer, tokens: n, block.outputDense, into: projected.pointer)
            Ops.add(x.pointer, projected.pointer, count: n * h)
            Ops.layerNorm(x.pointer, tokens: n, block.outputNorm)
        }

        for layer in layers {
            attend(layer.selfAttention, source: UnsafePointer(x.pointer), sourceTokens: n)
            if let cross = layer.crossAttention { attend(cross, source: image, sourceTokens: imageTokens) }
            MatMul.linear(x.pointer, tokens: n, layer.intermediate, into: hidden.pointer)
            Ops.gelu(hidden.pointer, count: n * config.intermediateSize)
            MatMul.linear(hidden.pointer, tokens: n, layer.output, into: projected.pointer)
            Ops.add(x.pointer, projected.pointer, count: n * h)
            Ops.layerNorm(x.pointer, tokens: n, layer.outputNorm)
        }
        return x
    }
}
