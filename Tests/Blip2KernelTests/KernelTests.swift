import Blip2Compute
import Blip2Core
import CKernels
import Foundation
import Testing

// Every kernel of every instruction set this CPU runs, against first principles (exact f64 sums of the
// stored values) and against the scalar reference table. The ARM paths run the same checks under qemu
// through Tests/ARM/kernel_harness.c (Tools/test.sh).

// A table of function pointers, never written after the library built it.
nonisolated(unsafe) private let ref = blip2_kernels_for(BLIP2_ISA_REF)!.pointee
private let productTypes: [ElementType] = [.f32, .f16, .q8, .q4, .q8p, .q4p]

/// The model loader accepts exactly the writable types for weights, and the products have no fallback:
/// every instruction set this CPU runs must multiply every one of them (one token and many).
@Test(arguments: KernelISA.supported)
func everyWritableTypeHasTiles(isa: KernelISA) throws {
    let context = try ComputeContext(threads: 1, isa: isa)
    for type in ElementType.allCases where type.isWritable {
        #expect(context.hasTiles(type), "\(isa) has no \(type.name) tiles")
    }
}

@Suite struct ActivationQuantizationTests {
    @Test(arguments: KernelISA.supported)
    func roundTripWithinHalfAStep(isa: KernelISA) throws {
        let k = try #require(isa.table).pointee
        var rng = SplitMix(seed: 11)
        let n = 32 * 37
        var x = (0..<n).map { _ in rng.activation() }
        for i in 0..<32 { x[i] = 0 }                                   // an all-zero block
        for i in 32..<64 { x[i] = Float(i - 48) + 0.5 }                 // exact ties once scaled by 1
        x[33] = 127
        var blocks = [blip2_block_q8a](repeating: blip2_block_q8a(), count: n / 32)
        var expected = blocks
        k.quantize_q8a(x, &blocks, n)
        ref.quantize_q8a(x, &expected, n)
        for b in 0..<(n / 32) {
            let block = blocks[b]
            let amax = x[(b * 32)..<(b * 32 + 32)].map(abs).max()!
            #expect(block.d == amax / 127, "block \(b): the scale is max|x| / 127")
            var sum = 0
            withUnsafeBytes(of: block.qs) { raw in
                for i in 0..<32 {
                    let q = Int8(bitPattern: raw[i])
                    sum += Int(q)
                    #expect(abs(x[b * 32 + i] - block.d * Float(q)) <= block.d * 0.5 * (1 + 1e-6), "element \(b * 32 + i)")
                }
            }
            #expect(block.s == block.d * Float(sum), "block \(b): s = d * sum(qs)")
            #expect(withUnsafeBytes(of: block) { a in withUnsafeBytes(of: expected[b]) { b in a.elementsEqual(b) } },
                    "\(isa) must quantize bit-identically to the reference (block \(b))")
        }
        // Ties at x = k + 0.5 with d = 1 round to the even neighbour: -15.5 -> -16, -13.5 -> -14, -12.5 -> -12.
        withUnsafeBytes(of: blocks[1].qs) { raw in
            #expect(Int8(bitPattern: raw[0]) == -16 && Int8(bitPattern: raw[2]) == -14 && Int8(bitPattern: raw[3]) == -12)
        }
    }
}

@Suite struct OneRowTileTests {
    /// Exact value and magnitude (sum of |terms| the kernel adds) of one quantized dot product.
    static func exact(_ w: RandomWeights, row: Int, _ x: [blip2_block_q8a], offset: Int) -> (value: Double, magnitude: Double) {
        var value = 0.0, magnitude = 0.0
        let q8 = w.rowFormat == .q8
        for b in 0..<(w.cols / 32) {
            w.rowBlock(row, b).withUnsafeBytes { raw in
                let block = raw.baseAddress!
                let d = Double(blip2_f16_to_f32(block.loadUnaligned(as: UInt16.self)))
                let a = x[offset + b]
                var dot = 0.0, absolute = 0.0
                withUnsafeBytes(of: a.qs) { qa in
                    for i in 0..<32 {
                        let ai = Double(Int8(bitPattern: qa[i]))
                        let wi: Double
                        if q8 {
                            wi = Double(Int8(bitPattern: block.load(fromByteOffset: 2 + i, as: UInt8.self)))
                            // vpdpbusd paths offset one operand by 128 (w for q8, a for q8p)
                            absolute += (abs(wi) + 128) * (abs(ai) + 128)
                        } else {
                            let byte = block.load(fromByteOffset: 4 + i % 16, as: UInt8.self)
                            wi = Double(i < 16 ? byte & 0x0f : byte >> 4)
                            absolute += 15 * abs(ai)
                        }
                        dot += wi * ai
                    }
                }
                value += d * Double(a.d) * dot
                magnitude += abs(d * Double(a.d)) * absolute
                if !q8 {
                    let m = Double(blip2_f16_to_f32(block.load(fromByteOffset: 2, as: UInt16.self)))
                    var sum = 0.0
                    withUnsafeBytes(of: a.qs) { qa in for i in 0..<32 { sum += Double(Int8(bitPattern: qa[i])) } }
                    value += m * Double(a.d) * sum
                    magnitude += abs(m * Double(a.s))
                }
            }
        }
        return (value, magnitude)
    }

    @Test(arguments: KernelISA.supported)
    func quantizedDotsOnOddBlockCounts(isa: KernelISA) throws {
        let k = try #require(isa.table).pointee
        var rng = SplitMix(seed: 21)
        for nb in [1, 2, 3, 31] {
            let n = nb * 32
            let x = (0..<n).map { _ in rng.activation() }
            let (a, _) = quantizedActivations(x, tokens: 1, cols: n)
            for type in [ElementType.q8, .q4] {
                let w = RandomWeights(type: type, rows: 1, cols: n, rng: &rng)
                let (value, magnitude) = Self.exact(w, row: 0, a, offset: 0)
                let got = w.bytes.withUnsafeBytes { oneRowDot(k, type, $0.baseAddress!, a, n: n) }
                let reference = w.bytes.withUnsafeBytes { oneRowDot(ref, type, $0.baseAddress!, a, n: n) }
                let tolerance = Tolerance.floatSum(terms: n, magnitude: magnitude)
                #expect(abs(Double(got) - value) <= tolerance, "\(isa) \(w.elementType), \(nb) blocks: \(got) vs exact \(value)")
                #expect(abs(Double(got) - Double(reference)) <= 2 * tolerance, "\(isa) \(w.elementType), \(nb) blocks: \(got) vs reference \(reference)")
            }
        }
    }

    @Test(arguments: KernelISA.supported)
    func floatDotsWithTails(isa: KernelISA) throws {
        let k = try #require(isa.table).pointee
        var rng = SplitMix(seed: 31)
        for n in [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 100, 588] {
            let x = (0..<n).map { _ in rng.activation() }
            for type in [ElementType.f32, .f16] {
                let w = RandomWeights(type: type, rows: 1, cols: n, rng: &rng)
                let values = w.row(0)
                let exact = zip(values, x).reduce(0.0) { $0 + $1.0 * Double($1.1) }
                let magnitude = zip(values, x).reduce(0.0) { $0 + abs($1.0 * Double($1.1)) }
                let (got, reference) = w.bytes.withUnsafeBytes { raw in
                    x.withUnsafeBytes { (oneRowDot(k, type, raw.baseAddress!, $0.baseAddress!, n: n),
                                         oneRowDot(ref, type, raw.baseAddress!, $0.baseAddress!, n: n)) }
                }
                let tolerance = Tolerance.floatSum(terms: n, magnitude: magnitude)
                #expect(abs(Double(got) - exact) <= tolerance, "\(isa) \(w.elementType), n=\(n): \(got) vs exact \(exact)")
                #expect(abs(Double(got) - Double(reference)) <= 2 * tolerance, "\(isa) \(w.elementType), n=\(n): \(got) vs reference \(reference)")
            }
        }
    }
}

/// One row times one activation row through `k`'s one-token tile for `type`, as the driver calls it on the
/// last row of a matrix: every row pointer of the tile at the same row, the first output kept.
private func oneRowDot(_ k: blip2_kernels, _ type: ElementType, _ w: UnsafeRawPointer, _ x: UnsafeRawPointer, n: Int) -> Float {
    let tile = withUnsafeBytes(of: k.matvec) { $0.assumingMemoryBound(to: blip2_tile.self)[Int(type.rawValue)] }
    let rows = Int(tile.rows), tokens = Int(tile.tokens)
    let wp = [UnsafeRawPointer?](repeating: w, count: rows), xp = [UnsafeRawPointer?](repeating: x, count: tokens)
    var out = [Float](repeating: .nan, count: rows * tokens)
    tile.fn(wp, xp, n, &out)
    return out[0]
}

/// `blip2_gemm_split` gives every output exactly the bits of two `blip2_gemm` calls over its two parts of the
/// tokens (a prefill's image rows and prompt rows), on every path: tiles of 3, 4 or 8 tokens never straddle
/// the split, and each part's chunks count from its own first token.
@Suite struct SplitProductTests {
    static let types: [ElementType] = [.f32, .f16, .q8, .q4, .q8p, .q4p, .q4k, .q3k, .q6k]

    @Test(arguments: KernelISA.supported)
    func splitEqualsTwoCalls(isa: KernelISA) throws {
        let k = try #require(isa.table), ref = try #require(KernelISA.ref.table)
        var rng = SplitMix(seed: 47)
        for type in Self.types {
            let traits = try #require(blip2_traits(type.rawValue))
            // 2560 inputs: the token chunk (160 KB of activation rows) holds 56 q8a rows, so 130 tokens span
            // three chunks and the parts' chunk edges fall at different places.
            for (cols, tokens, split) in [(64, 13, 5), (256, 33, 32), (256, 40, 8), (64, 9, 1), (64, 7, 6), (64, 2, 1),
                                          (2560, 130, 61), (2560, 90, 32), (64, 3, 0), (64, 3, 3)] {
                let rows = 19
                let w = RandomWeights(type: type, rows: rows, cols: cols, rng: &rng)
                let x = (0..<(tokens * cols)).map { _ in rng.activation() }
                let rowBytes = blip2_activation_row_bytes(traits.pointee.activation, cols)
                var activations = [UInt8](repeating: 0, count: tokens * rowBytes)
                activations.withUnsafeMutableBytes { out in
                    x.withUnsafeBufferPointer { xs in
                        for t in 0..<tokens {
                            let row = out.baseAddress! + t * rowBytes, input = xs.baseAddress! + t * cols
                            switch traits.pointee.activation {
                            case BLIP2_ACTIVATION_Q8A: ref.pointee.quantize_q8a(input, row.assumingMemoryBound(to: blip2_block_q8a.self), cols)
                            case BLIP2_ACTIVATION_Q8K: ref.pointee.quantize_q8k(input, row.assumingMemoryBound(to: blip2_block_q8k.self), cols)
                            default: row.copyMemory(from: input, byteCount: cols * 4)
                            }
                        }
                    }
                }
                let ldy = rows + 2
                var together = [Float](repeating: -12345, count: tokens * ldy), apart = together
                w.bytes.withUnsafeBytes { wr in
                    activations.withUnsafeBytes { xr in
                        let wp = wr.baseAddress!, xp = xr.baseAddress!
                        blip2_gemm_split(k, type.rawValue, wp, w.groupBytes, rows, xp, rowBytes, tokens, split, cols, nil, &together, ldy)
                        apart.withUnsafeMutableBufferPointer { y in
                            blip2_gemm(k, type.rawValue, wp, w.groupBytes, rows, xp, rowBytes, split, cols, nil, y.baseAddress!, ldy)
                            blip2_gemm(k, type.rawValue, wp, w.groupBytes, rows, xp + split * rowBytes, rowBytes, tokens - split, cols, nil,
                                       y.baseAddress! + split * ldy, ldy)
                        }
                    }
                }
                let differing = zip(together, apart).filter { $0.bitPattern != $1.bitPattern }.count
                #expect(differing == 0, "\(isa) \(type): \(tokens) tokens split at \(split), \(cols) inputs: \(differing) outputs differ from two calls")
                #expect(together.enumerated().allSatisfy { $0.offset % ldy < rows || $0.element == -12345 }, "\(isa) \(type): wrote past the rows")
            }
        }
    }
}

@Suite struct ProductTests {
    /// W x^T through the tiled driver of `isa` against the reference table, with a bias on odd shapes and
    /// an output stride wider than the rows (the gap must stay untouched).
    static func check(_ isa: KernelISA, type: ElementType, rows: Int, tokens: Int, cols: Int, rng: inout SplitMix) throws {
        let k = try #require(isa.table)
        let w = RandomWeights(type: type, rows: rows, cols: cols, rng: &rng)
        let x = (0..<(tokens * cols)).map { _ in rng.activation() }
        let bias: [Float]? = (rows + tokens) % 2 == 1 ? (0..<rows).map { _ in rng.activation() } : nil
        let ldy = rows + 3
        var got = [Float](repeating: -12345, count: tokens * ldy), expected = got
        let quantized = w.isQuantized ? quantizedActivations(x, tokens: tokens, cols: cols).blocks : []
        let inputRowBytes = w.isQuantized ? cols / 32 * MemoryLayout<blip2_block_q8a>.stride : cols * 4
        func run(_ table: UnsafePointer<blip2_kernels>, into y: inout [Float]) {
            w.bytes.withUnsafeBytes { raw in
                let input: UnsafeRawPointer = w.isQuantized ? quantized.withUnsafeBytes { $0.baseAddress! } : x.withUnsafeBytes { $0.baseAddress! }
                withExtendedLifetime((quantized, x)) {
                    if let bias {
                        bias.withUnsafeBufferPointer { b in
                            blip2_gemm(table, type.rawValue, raw.baseAddress!, w.groupBytes, rows, input, inputRowBytes, tokens, cols, b.baseAddress!, &y, ldy)
                        }
                    } else {
                        blip2_gemm(table, type.rawValue, raw.baseAddress!, w.groupBytes, rows, input, inputRowBytes, tokens, cols, nil, &y, ldy)
                    }
                }
            }
        }
        run(k, into: &got)
        run(KernelISA.ref.table!, into: &expected)

        // Magnitude bound per (row, token): max|w_r| * sum|x_t| for floats; per block for the quantized types.
        var bad = 0
        for r in 0..<rows {
            let values = w.row(r)
            let wmax = values.map(abs).max() ?? 0
            for t in 0..<tokens {
                let xs = x[(t * cols)..<((t + 1) * cols)]
                let magnitude: Double
                if w.isQuantized {
                    magnitude = OneRowTileTests.exact(w, row: r, quantized, offset: t * cols / 32).magnitude
                } else {
                    magnitude = wmax * xs.reduce(0.0) { $0 + abs(Double($1)) }
                }
                let tolerance = Tolerance.floatSum(terms: cols, magnitude: magnitude + abs(Double(bias?[r] ?? 0)))
                if !(abs(Double(got[t * ldy + r]) - Double(expected[t * ldy + r])) <= tolerance) { bad += 1 }
            }
        }
        for t in 0..<tokens { for r in rows..<ldy where got[t * ldy + r] != -12345 { bad += 1 } }
        #expect(bad == 0, "\(isa) \(w.elementType): rows=\(rows) tokens=\(tokens) cols=\(cols): \(bad) outputs differ from the reference")
    }

    @Test(arguments: KernelISA.supported)
    func everyRowCountAndTokenCount(isa: KernelISA) throws {
        var rng = SplitMix(seed: 41)
        for type in productTypes {
            let inner = type.isQuantized ? [32, 64, 96, 992] : [1, 3, 17, 33, 588]
            for rows in 1...67 {
                let tokens = rows % 9 + 1
                try Self.check(isa, type: type, rows: rows, tokens: tokens, cols: inner[rows % inner.count], rng: &rng)
            }
            // Every narrow tile, the full one, and the full one followed by each remainder.
            for rows in [1, 5, 8, 13] {
                for tokens in Array(1...11) + [15, 17, 19] {
                    try Self.check(isa, type: type, rows: rows, tokens: tokens, cols: inner[(rows + tokens) % inner.count], rng: &rng)
                }
            }
        }
    }
}

/// A narrow tile stands in for the full many-token tile at fewer tokens: only counts from 2 below the full
/// tile's, and only where the table has a many-token tile at all.
@Test(arguments: KernelISA.supported)
func narrowTilesAreBelowTheFullTile(isa: KernelISA) throws {
    let k = try #require(isa.table).pointee
    for type in ElementType.allCases {
        let full = withUnsafeBytes(of: k.matmul) { $0.assumingMemoryBound(to: blip2_tile.self)[Int(type.rawValue)] }
        let narrow = withUnsafeBytes(of: k.matmul_narrow) { raw in
            (0..<Int(BLIP2_TILE_MAX_TOKENS)).map { raw.assumingMemoryBound(to: blip2_tile_fn?.self)[Int(type.rawValue) * Int(BLIP2_TILE_MAX_TOKENS) + $0] }
        }
        #expect(full.tokens <= BLIP2_TILE_MAX_TOKENS, "\(isa) \(type.name): \(full.tokens) tokens")
        for (tokens, tile) in narrow.enumerated() where tile != nil {
            #expect(full.fn != nil && tokens >= 2 && tokens < full.tokens, "\(isa) \(type.name): a \(tokens)-token narrow tile beside a \(full.tokens)-token one")
        }
    }
}

@Suite struct LinearSeamTests {
    /// ComputeContext.linear (activation quantization, row split over the pool, bias) against exact f64 sums
    /// of the values the kernels see, and bit-identical for any thread count (rows never share a sum).
    @Test(arguments: ["f32", "f16", "q8", "q4", "q8p", "q4p"])
    func linearMatchesExactProducts(type name: String) throws {
        var rng = SplitMix(seed: 51)
        let type = try #require(ElementType(name: name))
        let rows = 203, cols = 320, tokens = 7
        let w = RandomWeights(type: type, rows: rows, cols: cols, rng: &rng)
        let x = (0..<(tokens * cols)).map { _ in rng.activation() }
        let bias = (0..<rows).map { _ in rng.activation() }
        let activations = w.isQuantized ? quantizedActivations(x, tokens: tokens, cols: cols).values : x.map(Double.init)
        var outputs: [[Float]] = []
        let isa = try KernelISA.fromEnvironment()
        for threads in [1, 2, 3] {
            let compute = try ComputeContext(threads: threads, isa: isa)
            var y = [Float](repeating: .nan, count: tokens * rows)
            w.bytes.withUnsafeBytes { raw in
                bias.withUnsafeBufferPointer { b in
                    let layer = Linear(WeightMatrix(name: "test", type: type, rows: rows, cols: cols, data: raw.baseAddress!),
                                       bias: b.baseAddress!)
                    compute.linear(x, tokens: tokens, layer, into: &y)
                }
            }
            outputs.append(y)
        }
        #expect(outputs[0] == outputs[1] && outputs[1] == outputs[2], "\(name): results depend on the thread count")
        var worst = 0.0
        for r in 0..<rows {
            let values = w.row(r)
            for t in 0..<tokens {
                var exact = Double(bias[r]), magnitude = abs(Double(bias[r]))
                for i in 0..<cols {
                    exact += values[i] * activations[t * cols + i]
                    magnitude += abs(values[i] * activations[t * cols + i])
                }
                // vpdpbusd paths offset one operand by 128; q4's minimum adds its own terms. Allow for both.
                let slack = w.rowFormat == .q8 && type.isQuantized ? 3.0 : type.isQuantized ? 16.0 : 1.0
                let tolerance = Tolerance.floatSum(terms: cols, magnitude: slack * magnitude)
                worst = max(worst, abs(Double(outputs[0][t * rows + r]) - exact) / tolerance)
            }
        }
        #expect(worst <= 1, "\(name) on \(isa): worst error \(worst)x the tolerance")
    }

    /// Layers run as one product (q, k, v) give, side by side, exactly what each gives alone: same tiles, same
    /// sums, for any thread count, for shared and for mixed weight types (which fall back to one job each).
    @Test(arguments: [["q4"], ["q8"], ["q8p"], ["q4p"], ["f32"], ["f16"], ["q8", "q4", "f16"], ["q8p", "q4p", "q8"]])
    func concatenatedLayersMatchSeparateProducts(types: [String]) throws {
        var rng = SplitMix(seed: 77)
        let rowCounts = [13, 40, 67], cols = 320
        let weights = rowCounts.enumerated().map { i, rows in
            RandomWeights(type: ElementType(name: types[i % types.count])!, rows: rows, cols: cols, rng: &rng)
        }
        let biases = rowCounts.map { rows in (0..<rows).map { _ in rng.activation() } }
        let stride = rowCounts.reduce(0, +)
        let isa = try KernelISA.fromEnvironment()
        for tokens in [1, 5] {
            let x = (0..<(tokens * cols)).map { _ in rng.activation() }
            for threads in [1, 2, 3] {
                let compute = try ComputeContext(threads: threads, isa: isa)
                var separate = [Float](repeating: .nan, count: tokens * stride)
                var together = [Float](repeating: .nan, count: tokens * stride)
                // Keep every weight and bias buffer alive while the layers point into them.
                let data = weights.map { w in w.bytes.withUnsafeBytes { UnsafeMutableRawPointer.allocate(byteCount: $0.count, alignment: 64) } }
                let biasData = biases.map { b in UnsafeMutablePointer<Float>.allocate(capacity: b.count) }
                defer {
                    data.forEach { $0.deallocate() }
                    biasData.forEach { $0.deallocate() }
                }
                for i in weights.indices {
                    weights[i].bytes.withUnsafeBytes { data[i].copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                    biasData[i].initialize(from: biases[i], count: biases[i].count)
                }
                let layers = weights.indices.map { i in
                    Linear(WeightMatrix(name: "test\(i)", type: ElementType(name: weights[i].elementType)!, rows: rowCounts[i], cols: cols,
                                        data: data[i]), bias: biasData[i])
                }
                var offset = 0
                for layer in layers {
                    var y = [Float](repeating: .nan, count: tokens * layer.weight.rows)
                    compute.linear(x, tokens: tokens, layer, into: &y)
                    for t in 0..<tokens {
                        for r in 0..<layer.weight.rows { separate[t * stride + offset + r] = y[t * layer.weight.rows + r] }
                    }
                    offset += layer.weight.rows
                }
                compute.linear(x, tokens: tokens, concatenated: layers, into: &together)
                #expect(separate == together, "\(types), \(tokens) token(s), \(threads) thread(s): concatenated product differs")
            }
        }
    }

    @Test func selectionErrorsSayWhatToDo() throws {
        #expect(KernelSelectionError.unknown("sse9").description.contains("ref, avx2, avx512, neon, dotprod"))
        #expect(throws: KernelSelectionError.unknown("sse9")) { try KernelISA.fromEnvironment(["BLIP2_ISA": "sse9"]) }
        #expect(throws: KernelSelectionError.threads(0)) { try ComputeContext(threads: 0, isa: .ref) }
        #expect((try? KernelISA.fromEnvironment([:])) == KernelISA.best)
        #expect((try? KernelISA.fromEnvironment(["BLIP2_ISA": "REF"])) == .ref)
        // Every x86-64 or AArch64 build lacks the other architecture's sets.
        let unsupported = try #require(KernelISA.allCases.first { !$0.isSupported })
        #expect(throws: KernelSelectionError.unsupported(unsupported)) { try ComputeContext(threads: 1, isa: unsupported) }
        #expect(throws: KernelSelectionError.unsupported(unsupported)) { try KernelISA.fromEnvironment(["BLIP2_ISA": unsupported.rawValue]) }
        #expect(KernelSelectionError.unsupported(unsupported).description.contains("not available on this CPU"))
        #expect(KernelISA.ref.isSupported && KernelISA.supported.contains(KernelISA.best))
        // The Swift cases name the C instruction sets one for one.
        for isa in KernelISA.allCases {
            #expect(String(cString: blip2_isa_name(isa.cValue)) == isa.rawValue)
            #expect(blip2_isa_from_name(isa.rawValue) == Int32(isa.cValue.rawValue))
            if let table = isa.table { #expect(String(cString: table.pointee.name) == isa.rawValue) }
        }
        #expect(blip2_isa_from_name("sse9") == -1)
    }
}

@Suite struct ExponentialTests {
    /// Within 2 ulp of the exact exponential over the clamped range (f64 reference).
    @Test(arguments: KernelISA.supported)
    func expWithinTwoUlp(isa: KernelISA) throws {
        let k = try #require(isa.table).pointee
        let n = 40_001
        var x = (0..<n).map { -87.0 + 175.0 * Float($0) / Float(n - 1) }
        x += [-87.3, 0, -0.0, 1e-8, -1e-8, 0.6931472, 88]
        var y = [Float](repeating: 0, count: x.count)
        k.exp_row(x, &y, x.count)
        var worst = 0.0
        for (xi, yi) in zip(x, y) {
            let exact = Foundation.exp(Double(xi))
            let ulp = Double(Float(exact).ulp)
            worst = max(worst, abs(Double(yi) - exact) / ulp)
        }
        #expect(worst <= 2, "\(isa): worst exp error \(worst) ulp")
    }

    @Test(arguments: KernelISA.supported)
    func softmaxMatchesReference(isa: KernelISA) throws {
        let k = try #require(isa.table).pointee
        var rng = SplitMix(seed: 81)
        for n in [1, 2, 3, 7, 8, 9, 31, 33, 257, 512] {
            let x = (0..<n).map { _ in rng.uniform(-12, 12) }
            var got = x, expected = x
            k.softmax(&got, n)
            ref.softmax(&expected, n)
            // exp within 2 ulp, the sum's order (2(n+16)u), the division and scaling, relative to each value.
            let bad = zip(got, expected).filter { abs(Double($0) - Double($1)) > (8 + 2 * Double(n + 16)) * Tolerance.u * Double($1) + 1e-38 }
            #expect(bad.isEmpty, "\(isa) n=\(n): \(bad.count) values differ")
            #expect(abs(got.reduce(0, +) - 1) < 1e-5)
        }
    }
}

@Suite struct ManyTokenFloatProductTests {
    /// Every path gives the reference's bits (each output one chain of fused multiply-adds in order, then times
    /// alpha) on every row and column tail of its blocks, with strides wider than the rows, and writes nothing
    /// outside the m x n outputs; the reference is within the float sum's bound of the f64 product.
    @Test(arguments: KernelISA.supported)
    func matchesReferenceOnEveryTail(isa: KernelISA) throws {
        let k = try #require(isa.table).pointee
        var rng = SplitMix(seed: 97)
        let sentinel: Float = 1234.5
        var differing = 0, outside = 0, inexact = 0
        for m in [1, 2, 5, 6, 7, 8, 9, 13, 17, 33] {
            for n in [1, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 24, 31, 32, 33, 40, 47, 48, 49, 88, 97] {
                for depth in [1, 3, 64, 88] {
                    let lda = depth + 3, ldb = n + 5, ldc = n + 7
                    let a = (0..<(m * lda)).map { _ in rng.activation() }
                    let b = (0..<(depth * ldb)).map { _ in rng.activation() }
                    let alpha = 0.125 + rng.uniform(0, 1)
                    var got = [Float](repeating: sentinel, count: (m + 1) * ldc), expected = got
                    k.gemm_f32(m, n, depth, alpha, a, lda, b, ldb, &got, ldc)
                    ref.gemm_f32(m, n, depth, alpha, a, lda, b, ldb, &expected, ldc)
                    for i in 0..<(m + 1) {
                        for j in 0..<ldc {
                            let g = got[i * ldc + j], e = expected[i * ldc + j]
                            guard i < m, j < n else {
                                if g != sentinel { outside += 1 }
                                continue
                            }
                            if g.bitPattern != e.bitPattern { differing += 1 }
                            var exact = 0.0, magnitude = 0.0
                            for p in 0..<depth {
                                let term = Double(a[i * lda + p]) * Double(b[p * ldb + j])
                                exact += term
                                magnitude += abs(term)
                            }
                            let alpha = Double(alpha)
                            if abs(Double(e) - alpha * exact) > Tolerance.floatSum(terms: depth, magnitude: alpha * magnitude) {
                                inexact += 1
                            }
                        }
                    }
                }
            }
        }
        #expect(differing == 0, "\(isa): \(differing) outputs differ from the reference's bits")
        #expect(outside == 0, "\(isa): \(outside) values written outside the outputs")
        #expect(inexact == 0, "reference: \(inexact) outputs beyond the float sum's bound")
    }
}

@Suite struct GELUTests {
    /// SIMD paths within 8 ulp of the exact value (f64 erfc); the reference (libm erff inside 1 + erf) within
    /// 1 ulp plus |x| 2^-24 from that sum's cancellation for negative x.
    @Test(arguments: KernelISA.supported)
    func geluAgainstExactValues(isa: KernelISA) throws {
        let k = try #require(isa.table).pointee
        let n = 20_001
        var x = (0..<n).map { -16 + 32 * Float($0) / Float(n - 1) }
        x += [0, -0.0, 1e-20, -1e-20, 100, -100, 1e-3]
        var y = x
        k.gelu(&y, y.count)
        var bad = 0
        for (xi, yi) in zip(x, y) {
            let exact = 0.5 * Double(xi) * erfc(-Double(xi) / 2.0.squareRoot())
            let ulp = exact == 0 ? 1.4e-45 : Double(Float(exact).ulp)
            let tolerance = isa == .ref ? ulp + abs(Double(xi)) * Tolerance.u : 8 * ulp
            if !(abs(Double(yi) - exact) <= tolerance + 1e-37) { bad += 1 }
        }
        #expect(bad == 0, "\(isa): \(bad) GELU values off")
    }
}

@Suite struct PanelFormatTests {
    /// A panel holds exactly the row format's blocks: the same floats quantized row by row and as panels
    /// dequantize to the same values, bit for bit, on every row (padding rows included as zeros).
    @Test(arguments: [(ElementType.q8p, ElementType.q8), (.q4p, .q4)])
    func panelsHoldTheRowFormatsValues(panel: ElementType, row: ElementType) throws {
        var rng = SplitMix(seed: 91)
        for rows in [1, 7, 8, 9, 23] {
            let cols = 96
            let values = (0..<(rows * cols)).map { _ in rng.activation() }
            var panels = [UInt8](repeating: 0xff, count: try #require(panel.byteCount(shape: [rows, cols])))
            var plain = [UInt8](repeating: 0, count: try #require(row.byteCount(shape: [rows, cols])))
            panels.withUnsafeMutableBytes { panel.traits.from_f32(values, rows, cols, $0.baseAddress!) }
            plain.withUnsafeMutableBytes { row.traits.from_f32(values, rows, cols, $0.baseAddress!) }
            #expect(panels.count == (rows + 7) / 8 * 8 * plain.count / rows, "a panel is eight rows' blocks")
            var a = [Float](repeating: 0, count: cols), b = a
            for r in 0..<rows {
                panels.withUnsafeBytes { panel.traits.to_f32($0.baseAddress!, r, cols, &a) }
                plain.withUnsafeBytes { row.traits.to_f32($0.baseAddress!, r, cols, &b) }
                #expect(a == b, "\(panel) rows=\(rows): row \(r) differs from \(row)")
            }
            for r in rows..<((rows + 7) / 8 * 8) {
                panels.withUnsafeBytes { panel.traits.to_f32($0.baseAddress!, r, cols, &a) }
                #expect(a.allSatisfy { $0 == 0 }, "\(panel) rows=\(rows): padding row \(r) is not zero")
            }
        }
    }

    /// Every format is one row of the traits table: names, block shapes and byte counts come from it.
    @Test func traitsTableDescribesEveryFormat() {
        #expect(ElementType.allCases.map(\.name) == ["f32", "f16", "bf16", "q8", "q4", "q8p", "q4p", "q4k", "q3k", "q6k"])
        #expect(ElementType.q8p.blockRows == 8 && ElementType.q8p.blockBytes == 8 * ElementType.q8.blockBytes)
        #expect(ElementType.q4p.blockRows == 8 && ElementType.q4p.blockBytes == 8 * ElementType.q4.blockBytes)
        #expect(ElementType.q8p.byteCount(shape: [9, 64]) == 2 * 2 * 272)     // two panels (one padded) of two blocks
        #expect(ElementType.q8.byteCount(shape: [9, 64]) == 9 * 2 * 34)
        #expect(ElementType.q8p.byteCount(shape: [9, 40]) == nil && ElementType.q8p.byteCount(shape: [64]) == nil)
        #expect(ElementType(rawValue: 3) == nil && ElementType(rawValue: 15) == nil && ElementType(rawValue: .max) == nil)
        #expect(!ElementType.bf16.isWritable && ElementType.allCases.filter { !$0.isWritable } == [.bf16])
        for type in ElementType.allCases {
            #expect(ElementType(rawValue: type.rawValue) == type && ElementType(name: type.name) == type)
            #expect(type.takesQuantizedActivations == type.isQuantized)
        }
    }
}

@Suite struct ComputeContextTests {
    /// Two contexts (two pools) run products at the same time, and one context shared by two threads takes
    /// them in turn: either way every result equals the one computed alone.
    @Test func productsOnTwoThreadsAgreeWithOneAtATime() throws {
        var rng = SplitMix(seed: 101)
        let rows = 96, cols = 256, tokens = 9
        let w = RandomWeights(type: .q8p, rows: rows, cols: cols, rng: &rng)
        let x = (0..<(tokens * cols)).map { _ in rng.activation() }
        let isa = try KernelISA.fromEnvironment()
        let data = UnsafeMutableRawPointer.allocate(byteCount: w.bytes.count, alignment: 64)
        defer { data.deallocate() }
        w.bytes.withUnsafeBytes { data.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        let layer = Linear(WeightMatrix(name: "test", type: .q8p, rows: rows, cols: cols, data: data), bias: nil)
        func product(_ compute: ComputeContext) -> [Float] {
            var y = [Float](repeating: .nan, count: tokens * rows)
            compute.linear(x, tokens: tokens, layer, into: &y)
            return y
        }
        let alone = product(try ComputeContext(threads: 2, isa: isa))
        let first = try ComputeContext(threads: 2, isa: isa), second = try ComputeContext(threads: 2, isa: isa)
        for contexts in [[first, second], [first, first]] {
            let results = Mutex([[Float]](repeating: [], count: 2 * 50))
            // Both sides read the same layer and input; each writes its own result slots, behind the lock.
            forEachDisjointPart(2) { side in
                for round in 0..<50 {
                    let y = product(contexts[side])
                    results.withLock { $0[side * 50 + round] = y }
                }
            }
            #expect(results.withLock { $0.allSatisfy { $0 == alone } })
        }
    }
}

/// A value behind a lock (tests only).
final class Mutex<Value>: @unchecked Sendable {
    private var value: Value
    private let lock = NSLock()
    init(_ value: Value) { self.value = value }
    func withLock<T>(_ body: (inout Value) -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body(&value)
    }
}

@Suite struct ProductClockTests {
    /// The clock counts each product's multiply-adds (2 x rows x cols x tokens, concatenated layers each)
    /// and its time, activation quantization within it, and nothing without a clock.
    @Test func countsOperationsAndTime() throws {
        var rng = SplitMix(seed: 7)
        let compute = try ComputeContext(threads: 2, isa: try KernelISA.fromEnvironment())
        let clock = ProductClock()
        compute.productClock = clock
        defer { compute.productClock = nil }
        let cols = 256, tokens = 9
        let x = (0..<(tokens * cols)).map { _ in rng.activation() }
        for (type, rows) in [(ElementType.q8p, 64), (.f32, 40)] {
            let w = RandomWeights(type: type, rows: rows, cols: cols, rng: &rng)
            var y = [Float](repeating: 0, count: tokens * 3 * rows)
            clock.reset()
            w.bytes.withUnsafeBytes { raw in
                let layer = Linear(WeightMatrix(name: "t", type: type, rows: rows, cols: cols, data: raw.baseAddress!), bias: nil)
                compute.linear(x, tokens: tokens, layer, into: &y)
                compute.linear(x, tokens: tokens, concatenated: [layer, layer], into: &y)
            }
            #expect(clock.operations == Double(3 * 2 * rows * cols * tokens), "\(type.name)")
            #expect(clock.productNanoseconds > 0 && clock.quantizeNanoseconds <= clock.productNanoseconds)
            #expect((clock.quantizeNanoseconds > 0) == type.takesQuantizedActivations, "\(type.name): quantization timed only where it runs")
            #expect(ProductClock.Operation.allCases.allSatisfy { clock.nanoseconds($0) == 0 }, "no other operation ran")
        }
        // The other operations, each under its own name.
        var values = (0..<(tokens * cols)).map { _ in rng.activation() }
        clock.reset()
        compute.gelu(&values, count: values.count)
        #expect(clock.nanoseconds(.gelu) > 0 && clock.nanoseconds(.norms) == 0 && clock.nanoseconds(.attention) == 0)
        #expect(clock.productNanoseconds == 0 && clock.operations == 0)
    }
}

@Suite struct TileStoreTests {
    /// Every path puts a tile's [row][token] results where they go (y[t * ldy + r] = out[r * tokens + t], plus
    /// the bias when there is one) with the same bits as that sum, for every tile shape the tables use and
    /// every count of real rows and tokens, and writes nothing else of y (nor anything read past the tile's
    /// values in its buffer).
    @Test(arguments: KernelISA.supported)
    func storesEveryRealResultAndNothingElse(isa: KernelISA) throws {
        let k = try #require(isa.table).pointee
        var rng = SplitMix(seed: 61)
        let sentinel: Float = -7777.25
        var wrong = 0, outside = 0, cases = 0
        for (rows, tokens) in [(1, 1), (4, 1), (8, 1), (16, 1), (32, 1), (4, 4), (8, 2), (8, 3), (8, 4), (8, 5),
                               (8, 6), (8, 7), (8, 8), (1, 8)] {
            let out = (0..<(rows * tokens)).map { _ in rng.activation() }
            // Signed zeros: a path that adds a zero bias where there is none would turn -0 into +0. The buffer
            // has the room the table asks for, past the tile's values a value no result may take.
            var withZeros = out + [Float](repeating: 4321.5, count: Int(BLIP2_STORE_TILE_ROOM) - out.count)
            withZeros[0] = -0.0
            let bias = (0..<rows).map { _ in rng.activation() }
            for nr in Set([1, rows / 2, rows - 1, rows]).filter({ $0 >= 1 }).sorted() {
                for nt in 1...tokens {
                    for useBias in [false, true] {
                        let ldy = nr + 3
                        var y = [Float](repeating: sentinel, count: (nt + 1) * ldy)
                        withZeros.withUnsafeBufferPointer { o in
                            bias.withUnsafeBufferPointer { b in
                                k.store_tile(o.baseAddress, rows, tokens, nr, nt, useBias ? b.baseAddress : nil, &y, ldy)
                            }
                        }
                        cases += 1
                        for t in 0...nt {
                            for r in 0..<ldy {
                                let got = y[t * ldy + r]
                                guard t < nt, r < nr else {
                                    if got.bitPattern != sentinel.bitPattern { outside += 1 }
                                    continue
                                }
                                let value = withZeros[r * tokens + t]
                                let expected = useBias ? value + bias[r] : value
                                if got.bitPattern != expected.bitPattern { wrong += 1 }
                            }
                        }
                    }
                }
            }
        }
        #expect(cases > 200)
        #expect(wrong == 0, "\(isa): \(wrong) results not where they belong or not the same bits")
        #expect(outside == 0, "\(isa): \(outside) values written outside the real rows and tokens")
    }
}
