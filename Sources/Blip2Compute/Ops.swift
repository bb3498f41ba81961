import CKernels
import Foundation

// MARK: - Element-wise, normalization and attention operations on [tokens, dim] rows

/// The shape of one multi-head attention: `queries` query rows against `keys` key and value rows per head.
/// q: [queries, heads * headDim] with rows `qStride` floats apart; head h's key j is at
/// `k + h * kvHeadStride + j * kvStride` (values alike); out: [queries, heads * headDim].
public struct AttentionShape {
    public var heads: Int
    public var headDim: Int
    public var queries: Int
    public var keys: Int
    public var qStride: Int
    public var kvStride: Int
    public var kvHeadStride: Int
    /// Multiplies every score (1 / sqrt(headDim), or 1 when q is scaled already).
    public var scale: Float
    /// When set, query i attends to keys 0...(causalOffset + i) only.
    public var causalOffset: Int?

    public init(heads: Int, headDim: Int, queries: Int, keys: Int, qStride: Int, kvStride: Int, kvHeadStride: Int,
                scale: Float, causalOffset: Int?) {
        self.heads = heads
        self.headDim = headDim
        self.queries = queries
        self.keys = keys
        self.qStride = qStride
        self.kvStride = kvStride
        self.kvHeadStride = kvHeadStride
        self.scale = scale
        self.causalOffset = causalOffset
    }
}

extension ComputeContext {
    /// In place over `tokens` rows of `dim`. Statistics in Double: the reference computes them in f32 with
    /// a pairwise reduction; Double keeps us at least as close to the exact value.
    public func layerNorm(_ x: UnsafeMutablePointer<Float>, tokens: Int, _ norm: LayerNormWeights) {
        layerNorm(x, into: x, tokens: tokens, norm)
    }

    /// The layer norm of `x` written to `y` (which may be `x`): x is read by the statistics and by the last
    /// pass, so a residual stream needs no copy before its norm.
    public func layerNorm(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, tokens: Int, _ norm: LayerNormWeights) {
        let started = productClock == nil ? 0 : DispatchTime.now().uptimeNanoseconds
        defer { productClock?.add(.norms, since: started) }
        let n = norm.dim
        forChunks(count: tokens, minimum: max(1, (1 << 14) / max(n, 1))) { range in
            Ops.layerNormRows(x, into: y, range, norm)
        }
    }

    /// Exact GELU: x * (1 + erf(x / sqrt(2))) / 2, by the selected kernels (libm's erff with `ref`, a vector
    /// erfc within 8 ulp otherwise). Large tensors (ViT-g: 257 x 6144 per layer) are split over the worker
    /// pool; every element is computed alone, so the values do not depend on the split.
    public func gelu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        let started = productClock == nil ? 0 : DispatchTime.now().uptimeNanoseconds
        defer { productClock?.add(.gelu, since: started) }
        let gelu = kernels.pointee.gelu!
        forChunks(count: count, minimum: 1 << 15) { range in
            gelu(x + range.lowerBound, range.count)
        }
    }

    /// Softmax in place over `count` values (the selected kernels' vector exponential; libm's with `ref`).
    public func softmax(_ x: UnsafeMutablePointer<Float>, count: Int) {
        guard count > 0 else { return }
        kernels.pointee.softmax(x, count)
    }

    /// Multi-head attention of `shape`. Heads run in parallel on the worker pool, each in its worker's scratch.
    /// Without a causal mask a head is two many-token f32 products (`gemm_f32`: the scaled scores against
    /// K^T, softmax per row, the probabilities against V); causal heads take one query at a time.
    public func attention(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                          out: UnsafeMutablePointer<Float>, _ shape: AttentionShape) {
        var one = AttentionInput(q: q, k: k, v: v, out: out, shape: shape)
        withUnsafeMutablePointer(to: &one) { attention(UnsafeBufferPointer(start: $0, count: 1)) }
    }

    /// The attention of several sequences at once (a decode step's: each its own query rows, cache and
    /// shape), as one pass over the pool whose parts are (sequence, head) pairs: a step of B sequences
    /// wakes the workers once per layer rather than B times. Every head is computed as `attention` would.
    public func attention(_ inputs: UnsafeBufferPointer<AttentionInput>) {
        guard let heads = inputs.first?.shape.heads, heads > 0 else { return }
        let clock = productClock, started = clock == nil ? 0 : DispatchTime.now().uptimeNanoseconds
        // Profiling the non-causal heads (a decode step's parts are many and short): per worker, the time its
        // parts spent in their products and in whole parts.
        let split: UnsafeMutablePointer<UInt64>? = clock == nil || inputs[0].shape.causalOffset != nil ? nil
            : .allocate(capacity: 2 * pool.threads)
        split?.initialize(repeating: 0, count: 2 * pool.threads)
        defer {
            if let clock {
                let wall = DispatchTime.now().uptimeNanoseconds - started
                clock.add(.attention, nanoseconds: wall)
                if let split {
                    var products: UInt64 = 0, parts: UInt64 = 0
                    for w in 0..<pool.threads { (products, parts) = (products + split[2 * w], parts + split[2 * w + 1]) }
                    if parts > 0 { clock.add(.attentionProducts, nanoseconds: UInt64(Double(wall) * Double(products) / Double(parts))) }
                    split.deallocate()
                }
            }
        }
        let kernels = self.kernels, pool = self.pool
        var floats = 1, work = 0
        for input in inputs {
            let shape = input.shape
            precondition(shape.heads == heads, "the sequences of one step have the same heads")
            precondition(input.prefix.keys <= shape.keys && (input.prefix.keys == 0 || shape.causalOffset != nil),
                         "a shared prefix lies inside a causal attention's keys")
            // Non-causal heads hold all scores [queries, keys], K^T [headDim, keys] and V [keys, headDim];
            // causal ones one row, and with a shared prefix the rest of the values after one seed row.
            let causal = input.prefix.keys > 0 ? shape.keys + (shape.keys - input.prefix.keys + 1) * shape.headDim : shape.keys
            floats = max(floats, shape.causalOffset == nil ? (shape.queries + 2 * shape.headDim) * shape.keys : causal)
            work += shape.heads * shape.queries * shape.keys * shape.headDim
        }
        let parts = inputs.count * heads
        let body = { (part: Int, worker: Int) in
            let input = inputs[part / heads], h = part % heads, shape = input.shape
            guard shape.queries > 0 else { return }
            if shape.causalOffset != nil, part + 2 < parts {
                // A decoding head's keys and values are two short runs of memory, each met cold: the hardware
                // prefetcher only catches on after a few misses. The part this worker likely takes next
                // (the workers take turns) is asked for now, while this one computes.
                // (Its own keys only: a prefix it shares was read by the sequence it shares it with.)
                let next = inputs[(part + 2) / heads], nh = (part + 2) % heads, nextShape = next.shape
                let own = nh * nextShape.kvHeadStride + next.prefix.keys * nextShape.kvStride
                let bytes = (nextShape.keys - next.prefix.keys) * nextShape.kvStride * MemoryLayout<Float>.stride
                blip2_prefetch_l2(next.k + own, bytes)
                blip2_prefetch_l2(next.v + own, bytes)
            }
            let scratch = pool.scratch(worker: worker, bytes: floats * MemoryLayout<Float>.stride).assumingMemoryBound(to: Float.self)
            let head = h * shape.kvHeadStride
            let partStarted = split == nil ? 0 : DispatchTime.now().uptimeNanoseconds
            Ops.attentionHead(h, q: input.q, k: input.k + head, v: input.v + head, out: input.out, shape,
                              prefix: input.prefix.keys > 0
                                  ? (input.prefix.k! + h * input.prefix.kvHeadStride, input.prefix.v! + h * input.prefix.kvHeadStride, input.prefix.keys)
                                  : nil,
                              scratch: scratch, kernels: kernels, productNanoseconds: split.map { $0 + 2 * worker })
            if let split { split[2 * worker + 1] += DispatchTime.now().uptimeNanoseconds - partStarted }
        }
        if threads > 1, parts > 1, work >= 1 << 16 {
            pool.run(parts: parts, body)
        } else {
            pool.runOnCaller(parts: parts, body)
        }
    }
}

/// One sequence's attention: its query rows, the first key and value of its cache, where its output rows go.
public struct AttentionInput {
    public var q: UnsafePointer<Float>
    public var k: UnsafePointer<Float>
    public var v: UnsafePointer<Float>
    public var out: UnsafeMutablePointer<Float>
    public var shape: AttentionShape
    /// Causal heads only: the first `prefix.keys` keys and values are read from another cache that holds
    /// the very same values there.
    public var prefix: AttentionPrefix

    public init(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                shape: AttentionShape, prefix: AttentionPrefix = .none) {
        self.q = q
        self.k = k
        self.v = v
        self.out = out
        self.shape = shape
        self.prefix = prefix
    }
}

/// Leading keys and values of a causal attention kept elsewhere: head h's key j at
/// `k + h * kvHeadStride + j * kvStride` (the sequence's own kvStride; values alike). The beams or samples
/// of one prompt, or requests on one picture, then read their common positions from one place, which the
/// first of them brought into cache, instead of each from its own copy in memory. The results are the same
/// bits as reading the sequence's own.
public struct AttentionPrefix {
    public var k: UnsafePointer<Float>?
    public var v: UnsafePointer<Float>?
    public var kvHeadStride: Int
    public var keys: Int

    public init(k: UnsafePointer<Float>, v: UnsafePointer<Float>, kvHeadStride: Int, keys: Int) {
        self.k = k
        self.v = v
        self.kvHeadStride = kvHeadStride
        self.keys = keys
    }
    private init() { (k, v, kvHeadStride, keys) = (nil, nil, 0, 0) }

    /// Every key the sequence's own.
    public static var none: AttentionPrefix { AttentionPrefix() }
}

/// Operations that need no context: row statistics, element-wise updates, the attention of one head.
public enum Ops {
    static func layerNormRows(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, _ rows: Range<Int>,
                              _ norm: LayerNormWeights) {
        let n = norm.dim
        for t in rows {
            let row = x + t * n, out = y + t * n
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
            // Eight lanes at a time (the optional tests once per register, not per value), each value by the
            // same three steps as the scalar tail, so the results are those of the one-value loop.
            i = 0
            let vm = SIMD8(repeating: m), vinv = SIMD8(repeating: inv)
            while i + 8 <= n {
                var v = (UnsafeRawPointer(row + i).loadUnaligned(as: SIMD8<Float>.self) - vm) * vinv
                if let w = norm.weight { v *= UnsafeRawPointer(w + i).loadUnaligned(as: SIMD8<Float>.self) }
                if let b = norm.bias { v += UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self) }
                UnsafeMutableRawPointer(out + i).storeBytes(of: v, as: SIMD8<Float>.self)
                i += 8
            }
            while i < n {
                var v = (row[i] - m) * inv
                if let w = norm.weight { v *= w[i] }
                if let b = norm.bias { v += b[i] }
                out[i] = v
                i += 1
            }
        }
    }

    /// Negative values become 0; NaN stays NaN (as torch's relu). Eight lanes at a time: the branch per
    /// element cost 1.5 ms per decoded token over OPT-2.7B's 32 x 10240 fc1 outputs.
    public static func relu(_ x: UnsafeMutablePointer<Float>, count: Int) {
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
    public static func add(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int) {
        for i in 0..<count { y[i] += x[i] }
    }

    /// sum a[i] b[i] over n values, eight lanes at a time.
    @inline(__always)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = SIMD8<Float>()
        var i = 0
        while i + 8 <= n {
            let va = UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self)
            let vb = UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self)
            acc += va * vb   // not addingProduct: without an FMA target that is a libm call per lane
            i += 8
        }
        var sum = acc.sum()
        while i < n {
            sum += a[i] * b[i]
            i += 1
        }
        return sum
    }

    static func attentionHead(_ h: Int, q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                              out: UnsafeMutablePointer<Float>, _ shape: AttentionShape,
                              prefix: (k: UnsafePointer<Float>, v: UnsafePointer<Float>, keys: Int)? = nil,
                              scratch: UnsafeMutablePointer<Float>, kernels: UnsafePointer<blip2_kernels>,
                              productNanoseconds: UnsafeMutablePointer<UInt64>? = nil) {
        let (queries, keys, headDim, qStride, kvStride) = (shape.queries, shape.keys, shape.headDim, shape.qStride, shape.kvStride)
        let scale = shape.scale, causalOffset = shape.causalOffset
        let width = shape.heads * headDim, float = MemoryLayout<Float>.stride
        let f32 = BLIP2_TYPE_F32.rawValue
        let qh = q + h * headDim, kh = k, vh = v   // k, v: this head's first key and value
        let softmax = kernels.pointee.softmax!
        guard let offset = causalOffset else {
            // Two many-token products whose second operand is read by rows: scores = s Q_h K_h^T over K_h^T
            // [headDim, keys], then out_h = P V_h. K_h^T and V_h are copied once per head into contiguous
            // rows: read in place, ViT-g's value rows sit 3 x 1408 floats apart, which maps them onto a few
            // L1 sets and cost the value product a fifth of its speed.
            let scores = scratch, kt = scratch + queries * keys, vp = kt + headDim * keys
            for j in 0..<keys {
                let key = kh + j * kvStride
                for d in 0..<headDim { kt[d * keys + j] = key[d] }
                (vp + j * headDim).update(from: vh + j * kvStride, count: headDim)
            }
            let gemm = kernels.pointee.gemm_f32!
            // Timed only when profiling (once per head: two products of hundreds of rows each).
            func now() -> UInt64 { productNanoseconds == nil ? 0 : DispatchTime.now().uptimeNanoseconds }
            let scoresStarted = now()
            gemm(queries, keys, headDim, scale, qh, qStride, kt, keys, scores, keys)
            let scoresEnded = now()
            for i in 0..<queries { softmax(scores + i * keys, keys) }
            let valuesStarted = now()
            gemm(queries, headDim, keys, 1, scores, keys, vp, headDim, out + h * headDim, width)
            productNanoseconds?.pointee += (scoresEnded - scoresStarted) + (now() - valuesStarted)
            return
        }
        // Causal (the language model): each query sees its own prefix; one token per product. The values are
        // weighed by the probabilities as a one-row f32 product (V_h's rows are contiguous in the cache).
        let scores = scratch, gemm = kernels.pointee.gemm_f32!
        for i in 0..<queries {
            let visible = min(keys, offset + i + 1), query = qh + i * qStride, row = out + i * width + h * headDim
            // Keys [0, shared) from the prefix, the rest from this sequence's own: each score is its own dot
            // product, so the split changes none.
            let shared = min(prefix?.keys ?? 0, visible), rest = visible - shared
            if let prefix, shared > 0 {
                blip2_gemm(kernels, f32, prefix.k, kvStride * float, shared, query, headDim * float, 1, headDim, nil, scores, shared)
            }
            if rest > 0 {
                blip2_gemm(kernels, f32, kh + shared * kvStride, kvStride * float, rest, query, headDim * float, 1, headDim, nil,
                           scores + shared, rest)
            }
            if scale != 1 { for j in 0..<visible { scores[j] *= scale } }
            softmax(scores, visible)
            guard let prefix, shared > 0 else {
                gemm(1, headDim, visible, 1, scores, visible, vh, kvStride, row, width)
                continue
            }
            gemm(1, headDim, shared, 1, scores, shared, prefix.v, kvStride, row, width)
            guard rest > 0 else { continue }
            // Every path's product sums each output as one chain of multiply-adds over the keys, from 0. The
            // rest continues the prefix's chain: its sums are a first value row weighed by 1 (1 x s + 0 = s
            // exactly), followed by this sequence's own values, so the output has the bits of one product.
            let values = scores + keys
            values.update(from: row, count: headDim)
            for j in 0..<rest { (values + (j + 1) * headDim).update(from: vh + (shared + j) * kvStride, count: headDim) }
            scores[shared - 1] = 1   // its probability was taken by the prefix's product
            gemm(1, headDim, rest + 1, 1, scores + shared - 1, rest + 1, values, headDim, row, width)
        }
    }

    /// y += a * x over n values. (Multiply and add, not addingProduct: without an FMA target the latter
    /// becomes a libm fmaf call per lane.)
    @inline(__always)
    public static func addScaled(_ y: UnsafeMutablePointer<Float>, _ a: Float, _ x: UnsafePointer<Float>, _ n: Int) {
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
public final class FloatBuffer {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int
    public init(_ count: Int) {
        self.count = count
        pointer = .allocate(capacity: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
    }
    deinit { pointer.deallocate() }
    public var array: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }
}
