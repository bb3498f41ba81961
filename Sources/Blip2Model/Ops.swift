import CKernels
import Foundation

// MARK: - Element-wise and normalization operations on [tokens, dim] rows

enum Ops {
    /// In place over `tokens` rows of `dim`. Statistics in Double: the reference computes them in f32 with
    /// a pairwise reduction; Double keeps us at least as close to the exact value.
    static func layerNorm(_ x: UnsafeMutablePointer<Float>, tokens: Int, _ norm: LayerNormWeights) {
        let n = norm.dim
        forChunks(count: tokens, minimum: max(1, (1 << 14) / max(n, 1))) { range in
            layerNormRows(x, range, norm)
        }
    }

    private static func layerNormRows(_ x: UnsafeMutablePointer<Float>, _ rows: Range<Int>, _ norm: LayerNormWeights) {
        let n = norm.dim
        for t in rows {
            let row = x + t * n
            // Four independent sums: one chain of dependent Double adds was most of a decode step's norm.
            var sums = SIMD4<Double>(), i = 0
            while i + 4 <= n {
                sums += SIMD4(Double(row[i]), Double(row[i + 1]), Double(row[i + 2]), Double(row[i + 3]))
                i += 4
            }
            var mean = sums.sum()
            while i < n { mean += Double(row[i]); i += 1 }
            mean /= Double(n)
            var squares = SIMD4<Double>()
            i = 0
            let center = SIMD4(repeating: mean)
            while i + 4 <= n {
                let d = SIMD4(Double(row[i]), Double(row[i + 1]), Double(row[i + 2]), Double(row[i + 3])) - center
                squares += d * d
                i += 4
            }
            var variance = squares.sum()
            while i < n {
                let d = Double(row[i]) - mean
                variance += d * d
                i += 1
            }
            variance /= Double(n)
            let inv = Float(1 / (variance + Double(norm.eps)).squareRoot())
            let m = Float(mean)
            for i in 0..<n {
                var v = (row[i] - m) * inv
                if let w = norm.weight { v *= w[i] }
                if let b = norm.bias { v += b[i] }
                row[i] = v
            }
        }
    }

    /// Exact GELU: x * (1 + erf(x / sqrt(2))) / 2, by the selected kernels (libm's erff with `ref`, a vector
    /// erfc within 8 ulp otherwise). Large tensors (ViT-g: 257 x 6144 per layer) are split over the worker
    /// pool; every element is computed alone, so the values do not depend on the split.
    static func gelu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        let gelu = MatMul.kernels.pointee.gelu!
        forChunks(count: count, minimum: 1 << 15) { range in
            gelu(x + range.lowerBound, range.count)
        }
    }

    /// Runs `body` over consecutive ranges covering 0..<count, on the pool when there are at least
    /// `minimum` elements per thread.
    @inline(__always)
    static func forChunks(count: Int, minimum: Int, _ body: (Range<Int>) -> Void) {
        let threads = MatMul.threads
        guard threads > 1, count >= 2 * minimum else {
            body(0..<count)
            return
        }
        let parts = min(threads * 2, count / minimum)
        MatMul.pool.run(parts: parts) { part, _ in body((count * part / parts)..<(count * (part + 1) / parts)) }
    }

    /// Negative values become 0; NaN stays NaN (as torch's relu). Eight lanes at a time: the branch per
    /// element cost 1.5 ms per decoded token over OPT-2.7B's 32 x 10240 fc1 outputs.
    static func relu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i + 8 <= count {
            let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(x + i).storeBytes(of: v.replacing(with: 0, where: v .< 0), as: SIMD8<Float>.self)
            i += 8
        }
        while i < count {
            if x[i] < 0 { x[i] = 0 }
            i += 1
        }
    }

    /// y += x
    static func add(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int) {
        for i in 0..<count { y[i] += x[i] }
    }

    /// Softmax in place over `count` values (the selected kernels' vector exponential; libm's with `ref`).
    static func softmax(_ x: UnsafeMutablePointer<Float>, count: Int) {
        guard count > 0 else { return }
        MatMul.kernels.pointee.softmax(x, count)
    }

    /// Multi-head attention for one block of queries against keys/values.
    /// q: [queries, heads*hd] (row stride qStride); k/v: head h's key j at `k + h * kvHeadStride + j * kvStride`
    /// (kvHeadStride defaults to hd: heads side by side in rows of kvStride); out: [queries, heads*hd].
    /// Query i may attend to keys 0...(causalOffset + i) when causal.
    /// Heads run in parallel on the worker pool, each product through the f32 kernels (keys as weight rows
    /// against the queries; then V^T against the probabilities). `scores` is kept for the callers' sake:
    /// every head works in its worker's scratch.
    static func attention(q: UnsafePointer<Float>, qStride: Int, queries: Int,
                          k: UnsafePointer<Float>, v: UnsafePointer<Float>, kvStride: Int, kvHeadStride: Int? = nil, keys: Int,
                          heads: Int, headDim: Int, scale: Float, causalOffset: Int?,
                          out: UnsafeMutablePointer<Float>, scores: UnsafeMutablePointer<Float>) {
        guard queries > 0, heads > 0 else { return }
        let kernels = MatMul.kernels
        let pool = MatMul.pool
        // Non-causal heads hold all scores [queries, keys] and V^T [headDim, keys]; causal ones one row.
        let floats = causalOffset == nil ? (queries + headDim) * keys : keys
        let headStride = kvHeadStride ?? headDim
        let body = { (h: Int, worker: Int) in
            let scratch = pool.scratch(worker: worker, bytes: max(1, floats) * MemoryLayout<Float>.stride).assumingMemoryBound(to: Float.self)
            attentionHead(h, q: q, qStride: qStride, queries: queries, k: k + h * headStride, v: v + h * headStride,
                          kvStride: kvStride, keys: keys,
                          heads: heads, headDim: headDim, scale: scale, causalOffset: causalOffset, out: out,
                          scratch: scratch, kernels: kernels)
        }
        let work = heads * queries * keys * headDim
        if MatMul.threads > 1, heads > 1, work >= 1 << 16 {
            pool.run(parts: heads, body)
        } else {
            pool.runOnCaller(parts: heads, body)
        }
    }

    private static func attentionHead(_ h: Int, q: UnsafePointer<Float>, qStride: Int, queries: Int,
                                      k: UnsafePointer<Float>, v: UnsafePointer<Float>, kvStride: Int, keys: Int,
                                      heads: Int, headDim: Int, scale: Float, causalOffset: Int?,
                                      out: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>,
                                      kernels: UnsafePointer<blip2_kernels>) {
        let width = heads * headDim, float = MemoryLayout<Float>.stride
        let qh = q + h * headDim, kh = k, vh = v   // k, v: this head's first key and value
        let softmax = kernels.pointee.softmax!
        guard let offset = causalOffset else {
            // scores[i, j] = q_i . k_j: keys are the weight rows, queries the tokens.
            let scores = scratch, vt = scratch + queries * keys
            blip2_gemm(kernels, BLIP2_WEIGHT_F32, kh, kvStride * float, keys, qh, qStride * float, queries, headDim, nil, scores, keys)
            for i in 0..<queries {
                let row = scores + i * keys
                for j in 0..<keys { row[j] *= scale }
                softmax(row, keys)
            }
            // out_i = sum_j p_ij v_j: V^T rows against the probability rows.
            for j in 0..<keys {
                for d in 0..<headDim { vt[d * keys + j] = vh[j * kvStride + d] }
            }
            blip2_gemm(kernels, BLIP2_WEIGHT_F32, vt, keys * float, headDim, scores, keys * float, queries, keys, nil, out + h * headDim, width)
            return
        }
        // Causal (the language model): each query sees its own prefix; one token per product.
        let scores = scratch
        for i in 0..<queries {
            let visible = min(keys, offset + i + 1)
            blip2_gemm(kernels, BLIP2_WEIGHT_F32, kh, kvStride * float, visible, qh + i * qStride, headDim * float, 1, headDim, nil, scores, visible)
            for j in 0..<visible { scores[j] *= scale }
            softmax(scores, visible)
            let o = out + i * width + h * headDim
            for d in 0..<headDim { o[d] = 0 }
            for j in 0..<visible { addScaled(o, scores[j], vh + j * kvStride, headDim) }
        }
    }

    /// y += a * x over n values. (Multiply and add, not addingProduct: without an FMA target the latter
    /// becomes a libm fmaf call per lane.)
    @inline(__always)
    static func addScaled(_ y: UnsafeMutablePointer<Float>, _ a: Float, _ x: UnsafePointer<Float>, _ n: Int) {
        var i = 0
        let va = SIMD8<Float>(repeating: a)
        while i + 8 <= n {
            let vx = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
            let vy = UnsafeRawPointer(y + i).loadUnaligned(as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(y + i).storeBytes(of: vy + va * vx, as: SIMD8<Float>.self)
            i += 8
        }
        while i < n {
            y[i] += a * x[i]
            i += 1
        }
    }
}

/// A heap buffer of floats, freed with its owner; model code passes its pointer around.
final class FloatBuffer {
    let pointer: UnsafeMutablePointer<Float>
    let count: Int
    init(_ count: Int) {
        self.count = count
        pointer = .allocate(capacity: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
    }
    deinit { pointer.deallocate() }
    var array: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }
}
