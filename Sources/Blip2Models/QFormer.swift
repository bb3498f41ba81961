import Blip2Compute
import Blip2Configs
import Blip2ModelFile
import Foundation

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

    /// The activations of one forward pass, allocated once per model. One forward at a time.
    private struct RunState {
        let x: FloatBuffer                    // [queries, hidden]: the residual stream
        let q: FloatBuffer                    // [queries, hidden]
        let k: FloatBuffer                    // [max(queries, image tokens), hidden]
        let v: FloatBuffer                    // [max(queries, image tokens), hidden]
        let context: FloatBuffer              // [queries, hidden]: attention output
        let projected: FloatBuffer            // [queries, hidden]
        let hidden: FloatBuffer               // [queries, intermediate]
    }
    private let state: RunState
    private let lock = NSLock()

    init(config: Blip2Config, loader: WeightLoader) throws {
        let q = config.qformerConfig
        self.config = q
        numQueryTokens = config.numQueryTokens
        let h = q.hiddenSize, eps = q.layerNormEps
        queryTokens = try loader.vector("query_tokens", count: numQueryTokens * h, shape: [1, numQueryTokens, h])
        layerNorm = try loader.layerNorm("qformer.layernorm", dim: h, eps: eps)
        func attention(_ prefix: String, keyWidth: Int) throws -> Attention {
            Attention(query: try loader.linear("\(prefix).attention.query", out: h, in: h),
                      key: try loader.linear("\(prefix).attention.key", out: h, in: keyWidth),
                      value: try loader.linear("\(prefix).attention.value", out: h, in: keyWidth),
                      outputDense: try loader.linear("\(prefix).output.dense", out: h, in: h),
                      outputNorm: try loader.layerNorm("\(prefix).output.LayerNorm", dim: h, eps: eps))
        }
        layers = try (0..<q.numHiddenLayers).map { i in
            let l = "qformer.encoder.layer.\(i)"
            return Layer(
                selfAttention: try attention("\(l).attention", keyWidth: h),
                crossAttention: q.hasCrossAttention(layer: i) ? try attention("\(l).crossattention", keyWidth: q.encoderHiddenSize) : nil,
                intermediate: try loader.linear("\(l).intermediate_query.dense", out: q.intermediateSize, in: h),
                output: try loader.linear("\(l).output_query.dense", out: h, in: q.intermediateSize),
                outputNorm: try loader.layerNorm("\(l).output_query.LayerNorm", dim: h, eps: eps))
        }
        let n = numQueryTokens, keyRows = max(n, config.visionConfig.numPositions)
        state = RunState(x: FloatBuffer(n * h), q: FloatBuffer(n * h), k: FloatBuffer(keyRows * h), v: FloatBuffer(keyRows * h),
                         context: FloatBuffer(n * h), projected: FloatBuffer(n * h), hidden: FloatBuffer(n * q.intermediateSize))
    }

    /// image: [imageTokens, encoder_hidden] -> last_hidden_state [queries, hidden].
    func forward(image: UnsafePointer<Float>, imageTokens: Int, compute: ComputeContext) -> [Float] {
        lock.lock()
        defer { lock.unlock() }
        let h = config.hiddenSize, n = numQueryTokens
        let heads = config.numAttentionHeads, headDim = h / heads
        precondition(imageTokens <= state.k.count / h, "the image states come from this model's vision tower")
        let x = state.x.pointer, q = state.q.pointer, k = state.k.pointer, v = state.v.pointer
        let context = state.context.pointer, projected = state.projected.pointer, hidden = state.hidden.pointer
        x.update(from: queryTokens, count: n * h)
        compute.layerNorm(x, tokens: n, layerNorm)

        // BERT attention block: LayerNorm(x + dense(attention(x, source))).
        func attend(_ block: Attention, source: UnsafePointer<Float>, sourceTokens: Int) {
            compute.linear(x, tokens: n, block.query, into: q)
            compute.linear(source, tokens: sourceTokens, block.key, into: k)
            compute.linear(source, tokens: sourceTokens, block.value, into: v)
            let shape = AttentionShape(heads: heads, headDim: headDim, queries: n, keys: sourceTokens, qStride: h, kvStride: h,
                                       kvHeadStride: headDim, scale: 1 / Float(headDim).squareRoot(), causalOffset: nil)
            compute.attention(q: q, k: k, v: v, out: context, shape)
            compute.linear(context, tokens: n, block.outputDense, into: projected)
            Ops.add(x, projected, count: n * h)
            compute.layerNorm(x, tokens: n, block.outputNorm)
        }

        for layer in layers {
            attend(layer.selfAttention, source: UnsafePointer(x), sourceTokens: n)
            if let cross = layer.crossAttention { attend(cross, source: image, sourceTokens: imageTokens) }
            compute.linear(x, tokens: n, layer.intermediate, into: hidden)
            compute.gelu(hidden, count: n * config.intermediateSize)
            compute.linear(hidden, tokens: n, layer.output, into: projected)
            Ops.add(x, projected, count: n * h)
            compute.layerNorm(x, tokens: n, layer.outputNorm)
        }
        return Array(UnsafeBufferPointer(start: x, count: n * h))
    }
}
