import Blip2Compute
import Foundation
import Testing

// The element-wise and attention work split over the pool must give the same values as one thread
// (each output is computed by exactly one part), and attention must match softmax(QK^T s)V in f64.
@Suite struct ParallelOpsTests {
    static func context(threads: Int) -> ComputeContext {
        try! ComputeContext(threads: threads, isa: KernelISA.fromEnvironment())
    }

    @Test(arguments: [nil, 5] as [Int?])
    func attentionOverHeads(causalOffset: Int?) {
        var rng = SplitMix(seed: 61)
        let heads = 4, headDim = 24, queries = 33, keys = causalOffset.map { $0 + 33 } ?? 40
        let width = heads * headDim
        let q = (0..<(queries * width)).map { _ in rng.uniform(-1, 1) }
        let k = (0..<(keys * width)).map { _ in rng.uniform(-1, 1) }
        let v = (0..<(keys * width)).map { _ in rng.uniform(-1, 1) }
        let scale: Float = 0.3
        func run(threads: Int) -> [Float] {
            var out = [Float](repeating: .nan, count: queries * width)
            let shape = AttentionShape(heads: heads, headDim: headDim, queries: queries, keys: keys, qStride: width, kvStride: width,
                                       kvHeadStride: headDim, scale: scale, causalOffset: causalOffset)
            Self.context(threads: threads).attention(q: q, k: k, v: v, out: &out, shape)
            return out
        }
        let one = run(threads: 1), two = run(threads: 2), three = run(threads: 3)
        #expect(one == two && two == three)
        var worst = 0.0
        for h in 0..<heads {
            for i in 0..<queries {
                let visible = causalOffset.map { min(keys, $0 + i + 1) } ?? keys
                var logits = (0..<visible).map { j in
                    (0..<headDim).reduce(0.0) { $0 + Double(q[i * width + h * headDim + $1]) * Double(k[j * width + h * headDim + $1]) } * Double(scale)
                }
                let top = logits.max()!
                logits = logits.map { exp($0 - top) }
                let total = logits.reduce(0, +)
                for d in 0..<headDim {
                    let exact = (0..<visible).reduce(0.0) { $0 + logits[$1] / total * Double(v[$1 * width + h * headDim + d]) }
                    worst = max(worst, abs(exact - Double(two[i * width + h * headDim + d])))
                }
            }
        }
        #expect(worst < 1e-5, "attention differs from the f64 result by \(worst)")
    }

    /// Causal heads reading their first keys and values from another cache that holds the same values there
    /// (a step's beams, head-major caches as the language model keeps them) give the very bits of reading
    /// their own, on every instruction set this CPU runs, for one query and for several (a prompt riding
    /// on the step), and for a prefix longer than some queries see. The sequence's own copy of the prefix
    /// holds NaN, so a read of it shows.
    @Test(arguments: [1, 7, 31])
    func sharedPrefixGivesTheBitsOfTheOwnKeys(prefixKeys: Int) throws {
        var rng = SplitMix(seed: 62)
        let heads = 3, headDim = 20, start = 37, stored = 48, width = heads * headDim
        let block = heads * stored * headDim
        let keys = (0..<block).map { _ in rng.uniform(-1, 1) }, values = (0..<block).map { _ in rng.uniform(-1, 1) }
        // The other cache: the same prefix in a layout of another capacity (its own head stride), garbage after.
        let otherStored = 40, otherBlock = heads * otherStored * headDim
        var otherKeys = [Float](repeating: 9, count: otherBlock), otherValues = [Float](repeating: -9, count: otherBlock)
        var poisonedKeys = keys, poisonedValues = values
        for h in 0..<heads {
            for j in 0..<prefixKeys {
                for d in 0..<headDim {
                    otherKeys[(h * otherStored + j) * headDim + d] = keys[(h * stored + j) * headDim + d]
                    otherValues[(h * otherStored + j) * headDim + d] = values[(h * stored + j) * headDim + d]
                    poisonedKeys[(h * stored + j) * headDim + d] = .nan
                    poisonedValues[(h * stored + j) * headDim + d] = .nan
                }
            }
        }
        for queries in [1, 4] {
            let offset = prefixKeys > 1 && queries > 1 ? prefixKeys - 2 : start   // some queries see only part of the prefix
            let q = (0..<(queries * 3 * width)).map { _ in rng.uniform(-1, 1) }
            let shape = AttentionShape(heads: heads, headDim: headDim, queries: queries, keys: offset + queries, qStride: 3 * width,
                                       kvStride: headDim, kvHeadStride: stored * headDim, scale: 0.7, causalOffset: offset)
            for isa in KernelISA.supported {
                let context = try ComputeContext(threads: 2, isa: isa)
                func run(_ k: [Float], _ v: [Float], prefix: (k: UnsafePointer<Float>, v: UnsafePointer<Float>)?) -> [Float] {
                    var out = [Float](repeating: .nan, count: queries * width)
                    q.withUnsafeBufferPointer { q in
                        k.withUnsafeBufferPointer { k in
                            v.withUnsafeBufferPointer { v in
                                out.withUnsafeMutableBufferPointer { out in
                                    var input = AttentionInput(
                                        q: q.baseAddress!, k: k.baseAddress!, v: v.baseAddress!, out: out.baseAddress!, shape: shape,
                                        prefix: prefix.map { AttentionPrefix(k: $0.k, v: $0.v, kvHeadStride: otherStored * headDim, keys: prefixKeys) } ?? .none)
                                    withUnsafeMutablePointer(to: &input) { context.attention(UnsafeBufferPointer(start: $0, count: 1)) }
                                }
                            }
                        }
                    }
                    return out
                }
                let own = run(keys, values, prefix: nil)
                let shared = otherKeys.withUnsafeBufferPointer { k in
                    otherValues.withUnsafeBufferPointer { v in run(poisonedKeys, poisonedValues, prefix: (k.baseAddress!, v.baseAddress!)) }
                }
                #expect(!own.contains { $0.isNaN })
                #expect(shared.map(\.bitPattern) == own.map(\.bitPattern), "\(isa), \(queries) queries, \(prefixKeys) shared keys")
            }
        }
    }

    /// Layer norm into another buffer gives the in-place bits and leaves its input alone; both are within a few
    /// float roundings of the f64 layer norm (a width with a tail after the eight-lane steps).
    @Test func layerNormIntoAnotherBuffer() {
        var rng = SplitMix(seed: 73)
        let tokens = 19, dim = 637
        let x = (0..<(tokens * dim)).map { _ in rng.activation() + 3 }
        let gamma = (0..<dim).map { _ in rng.uniform(0.5, 1.5) }, beta = (0..<dim).map { _ in rng.uniform(-0.1, 0.1) }
        var inPlace = x, source = x, out = [Float](repeating: .nan, count: x.count)
        let compute = Self.context(threads: 2)
        gamma.withUnsafeBufferPointer { w in
            beta.withUnsafeBufferPointer { b in
                let norm = LayerNormWeights(weight: w.baseAddress, bias: b.baseAddress, dim: dim, eps: 1e-6)
                compute.layerNorm(&inPlace, tokens: tokens, norm)
                compute.layerNorm(&source, into: &out, tokens: tokens, norm)
            }
        }
        #expect(out == inPlace)
        #expect(source == x)
        var worst = 0.0
        for t in 0..<tokens {
            let row = x[(t * dim)..<((t + 1) * dim)].map(Double.init)
            let mean = row.reduce(0, +) / Double(dim)
            let variance = row.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(dim)
            for i in 0..<dim {
                let exact = (row[i] - mean) / (variance + 1e-6).squareRoot() * Double(gamma[i]) + Double(beta[i])
                worst = max(worst, abs(Double(out[t * dim + i]) - exact))
            }
        }
        #expect(worst < 1e-5, "layer norm differs from the f64 result by \(worst)")
    }

    @Test func geluAndLayerNormDoNotDependOnTheSplit() {
        var rng = SplitMix(seed: 71)
        let tokens = 97, dim = 640
        let x = (0..<(tokens * dim)).map { _ in rng.activation() }
        let gamma = (0..<dim).map { _ in rng.uniform(0.5, 1.5) }, beta = (0..<dim).map { _ in rng.uniform(-0.1, 0.1) }
        func run(threads: Int) -> ([Float], [Float]) {
            var g = x, n = x
            let compute = Self.context(threads: threads)
            compute.gelu(&g, count: g.count)
            gamma.withUnsafeBufferPointer { w in
                beta.withUnsafeBufferPointer { b in
                    compute.layerNorm(&n, tokens: tokens, LayerNormWeights(weight: w.baseAddress, bias: b.baseAddress, dim: dim, eps: 1e-5))
                }
            }
            return (g, n)
        }
        let one = run(threads: 1), two = run(threads: 2)
        #expect(one.0 == two.0 && one.1 == two.1)
        for i in stride(from: 0, to: x.count, by: 997) {
            let exact = 0.5 * Double(x[i]) * (1 + erf(Double(x[i]) / 2.0.squareRoot()))
            #expect(abs(Double(two.0[i]) - exact) <= 1e-6 * max(1, abs(exact)))
        }
    }
}
