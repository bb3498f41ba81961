import Blip2Compute
import Blip2Configs
import Blip2ModelFile
import Foundation

// MARK: - Vision: EVA ViT-g
//
// 14x14 stride-14 patch convolution + class token + learned positions; pre-LN layers with a fused qkv
// projection whose bias is [q_bias, 0, v_bias]; exact GELU MLP; post_layernorm on every token.

final class VisionModel {
    let config: Blip2VisionConfig
    // vision_model.embeddings.*
    let classEmbedding: UnsafePointer<Float>      // class_embedding [1, 1, hidden]
    let patchEmbedding: Linear                     // patch_embedding.{weight [hidden, C, P, P] as [hidden, C*P*P], bias [hidden]}
    let positionEmbedding: UnsafePointer<Float>   // position_embedding [1, positions, hidden]
    let layers: [Layer]
    let postLayerNorm: LayerNormWeights           // post_layernorm [hidden]

    struct Layer {
        let layerNorm1: LayerNormWeights           // layer_norm1
        let qkv: Linear                            // self_attn.qkv [3*hidden, hidden], bias [3*hidden] if qkv_bias
        let projection: Linear                     // self_attn.projection [hidden, hidden]
        let layerNorm2: LayerNormWeights           // layer_norm2
        let fc1: Linear                            // mlp.fc1 [intermediate, hidden]
        let fc2: Linear                            // mlp.fc2 [hidden, intermediate]
    }

    /// The activations of one image, allocated once per model (ViT-g: about 15 MB). One forward at a time.
    private struct RunState {
        let patchRows: FloatBuffer                 // [patches, channels * patch * patch]
        let x: FloatBuffer                         // [tokens, hidden]: the residual stream
        let normed: FloatBuffer                    // [tokens, hidden]
        let qkv: FloatBuffer                       // [tokens, 3 * hidden]
        let context: FloatBuffer                   // [tokens, hidden]: attention output
        let hidden: FloatBuffer                    // [tokens, intermediate]
    }
    private let state: RunState
    private let lock = NSLock()

    init(config: Blip2VisionConfig, loader: WeightLoader) throws {
        self.config = config
        let h = config.hiddenSize, p = config.patchSize, c = config.numChannels, eps = config.layerNormEps
        let e = "vision_model.embeddings"
        classEmbedding = try loader.vector("\(e).class_embedding", count: h, shape: [1, 1, h])
        patchEmbedding = Linear(try loader.matrix("\(e).patch_embedding.weight", rows: h, cols: c * p * p, shape: [h, c, p, p]),
                                bias: try loader.vector("\(e).patch_embedding.bias", count: h))
        positionEmbedding = try loader.vector("\(e).position_embedding", count: config.numPositions * h, shape: [1, config.numPositions, h])
        layers = try (0..<config.numHiddenLayers).map { i in
            let l = "vision_model.encoder.layers.\(i)"
            return Layer(
                layerNorm1: try loader.layerNorm("\(l).layer_norm1", dim: h, eps: eps),
                qkv: try loader.linear("\(l).self_attn.qkv", out: 3 * h, in: h, bias: config.qkvBias),
                projection: try loader.linear("\(l).self_attn.projection", out: h, in: h),
                layerNorm2: try loader.layerNorm("\(l).layer_norm2", dim: h, eps: eps),
                fc1: try loader.linear("\(l).mlp.fc1", out: config.intermediateSize, in: h),
                fc2: try loader.linear("\(l).mlp.fc2", out: h, in: config.intermediateSize))
        }
        postLayerNorm = try loader.layerNorm("vision_model.post_layernorm", dim: h, eps: eps)
        let patches = config.numPositions - 1, tokens = config.numPositions
        state = RunState(patchRows: FloatBuffer(patches * c * p * p), x: FloatBuffer(tokens * h), normed: FloatBuffer(tokens * h),
                         qkv: FloatBuffer(tokens * 3 * h), context: FloatBuffer(tokens * h),
                         hidden: FloatBuffer(tokens * config.intermediateSize))
    }

    /// pixels: [channels, imageSize, imageSize] -> last_hidden_state [positions, hidden].
    func forward(pixels: UnsafePointer<Float>, compute: ComputeContext) -> [Float] {
        lock.lock()
        defer { lock.unlock() }
        let h = config.hiddenSize, p = config.patchSize, c = config.numChannels, size = config.imageSize
        let grid = size / p, patches = grid * grid, tokens = patches + 1, patchWidth = c * p * p
        let x = state.x.pointer, normed = state.normed.pointer, qkv = state.qkv.pointer
        let context = state.context.pointer, hidden = state.hidden.pointer

        // Patches flattened in the convolution weight's (channel, row, column) order.
        for gy in 0..<grid {
            for gx in 0..<grid {
                let dst = state.patchRows.pointer + (gy * grid + gx) * patchWidth
                for ch in 0..<c {
                    for ky in 0..<p {
                        let src = pixels + ch * size * size + (gy * p + ky) * size + gx * p
                        (dst + (ch * p + ky) * p).update(from: src, count: p)
                    }
                }
            }
        }
        x.update(from: classEmbedding, count: h)
        compute.linear(state.patchRows.pointer, tokens: patches, patchEmbedding, into: x + h)
        Ops.add(x, positionEmbedding, count: tokens * h)

        let heads = config.numAttentionHeads, headDim = h / heads
        // qkv row: [q (heads x hd) | k | v]
        let attention = AttentionShape(heads: heads, headDim: headDim, queries: tokens, keys: tokens, qStride: 3 * h, kvStride: 3 * h,
                                       kvHeadStride: headDim, scale: 1 / Float(headDim).squareRoot(), causalOffset: nil)
        for layer in layers {
            compute.layerNorm(x, into: normed, tokens: tokens, layer.layerNorm1)
            compute.linear(normed, tokens: tokens, layer.qkv, into: qkv)
            compute.attention(q: qkv, k: qkv + h, v: qkv + 2 * h, out: context, attention)
            compute.linear(context, tokens: tokens, layer.projection, into: normed)
            Ops.add(x, normed, count: tokens * h)

            compute.layerNorm(x, into: normed, tokens: tokens, layer.layerNorm2)
            compute.linear(normed, tokens: tokens, layer.fc1, into: hidden)
            compute.gelu(hidden, count: tokens * config.intermediateSize)
            compute.linear(hidden, tokens: tokens, layer.fc2, into: normed)
            Ops.add(x, normed, count: tokens * h)
        }
        compute.layerNorm(x, tokens: tokens, postLayerNorm)
        return Array(UnsafeBufferPointer(start: x, count: tokens * h))
    }
}
