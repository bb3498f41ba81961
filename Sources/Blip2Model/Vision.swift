import Blip2Config
import Blip2ModelFile

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

    init(config: Blip2VisionConfig, loader: WeightLoader, storage: inout [UnsafeMutablePointer<Float>]) throws {
        self.config = config
        let h = config.hiddenSize, p = config.patchSize, c = config.numChannels, eps = config.layerNormEps
        let e = "vision_model.embeddings"
        classEmbedding = try loader.vector("\(e).class_embedding", count: h, shape: [1, 1, h], into: &storage)
        patchEmbedding = Linear(weight: try loader.matrix("\(e).patch_embedding.weight", rows: h, cols: c * p * p, shape: [h, c, p, p]),
                                bias: try loader.vector("\(e).patch_embedding.bias", count: h, into: &storage))
        positionEmbedding = try loader.vector("\(e).position_embedding", count: config.numPositions * h,
                                              shape: [1, config.numPositions, h], into: &storage)
        layers = try (0..<config.numHiddenLayers).map { i in
            let l = "vision_model.encoder.layers.\(i)"
            return Layer(
                layerNorm1: try loader.layerNorm("\(l).layer_norm1", dim: h, eps: eps, into: &storage),
                qkv: try loader.linear("\(l).self_attn.qkv", out: 3 * h, in: h, bias: config.qkvBias, into: &storage),
                projection: try loader.linear("\(l).self_attn.projection", out: h, in: h, into: &storage),
                layerNorm2: try loader.layerNorm("\(l).layer_norm2", dim: h, eps: eps, into: &storage),
                fc1: try loader.linear("\(l).mlp.fc1", out: config.intermediateSize, in: h, into: &storage),
                fc2: try loader.linear("\(l).mlp.fc2", out: h, in: config.intermediateSize, into: &storage))
        }
        postLayerNorm = try loader.layerNorm("vision_model.post_layernorm", dim: h, eps: eps, into: &storage)
    }

    /// pixels: [channels, imageSize, imageSize] -> last_hidden_state [positions, hidden].
    func forward(pixels: UnsafePointer<Float>) -> FloatBuffer {
        let h = config.hiddenSize, p = config.patchSize, c = config.numChannels, size = config.imageSize
        let grid = size / p, patches = grid * grid, tokens = patches + 1, patchWidth = c * p * p

        // Patches flattened in the convolution weight's (channel, row, column) order.
        let patchRows = FloatBuffer(patches * patchWidth)
        for gy in 0..<grid {
            for gx in 0..<grid {
                let dst = patchRows.pointer + (gy * grid + gx) * patchWidth
                for ch in 0..<c {
                    for ky in 0..<p {
                        let src = pixels + ch * size * size + (gy * p + ky) * size + gx * p
                        (dst + (ch * p + ky) * p).update(from: src, count: p)
                    }
                }
            }
        }
        let x = FloatBuffer(tokens * h)
        x.pointer.update(from: classEmbedding, count: h)
        MatMul.linear(patchRows.pointer, tokens: patches, patchEmbedding, into: x.pointer + h)
        Ops.add(x.pointer, positionEmbedding, count: tokens * h)

        let heads = config.numAttentionHeads, headDim = h / heads
        let normed = FloatBuffer(tokens * h), qkv = FloatBuffer(tokens * 3 * h), context = FloatBuffer(tokens * h)
        let hidden = FloatBuffer(tokens * config.intermediateSize), scores = FloatBuffer(tokens)
        let scale = 1 / Float(headDim).squareRoot()
        for layer in layers {
            normed.pointer.update(from: x.pointer, count: tokens * h)
            Ops.layerNorm(normed.pointer, tokens: tokens, layer.layerNorm1)
            MatMul.linear(normed.pointer, tokens: tokens, layer.qkv, into: qkv.pointer)
            // qkv row: [q (heads x hd) | k | v]
            Ops.attention(q: qkv.pointer, qStride: 3 * h, queries: tokens, k: qkv.pointer + h, v: qkv.pointer + 2 * h,
                          kvStride: 3 * h, keys: tokens, heads: heads, headDim: headDim, scale: scale, causalOffset: nil,
                          out: context.pointer, scores: scores.pointer)
            MatMul.linear(context.pointer, tokens: tokens, layer.projection, into: normed.pointer)
            Ops.add(x.pointer, normed.pointer, count: tokens * h)

            normed.pointer.update(from: x.pointer, count: tokens * h)
            Ops.layerNorm(normed.pointer, tokens: tokens, layer.layerNorm2)
            MatMul.linear(normed.pointer, tokens: tokens, layer.fc1, into: hidden.pointer)
            Ops.gelu(hidden.pointer, count: tokens * config.intermediateSize)
            MatMul.linear(hidden.pointer, tokens: tokens, layer.fc2, into: normed.pointer)
            Ops.add(x.pointer, normed.pointer, count: tokens * h)
        }
        Ops.layerNorm(x.pointer, tokens: tokens, postLayerNorm)
        return x
    }
}
