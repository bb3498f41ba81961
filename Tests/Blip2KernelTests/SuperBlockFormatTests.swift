import Blip2Compute
import Blip2Core
import CKernels
import Foundation
import Testing

// The super-block formats (q4k, q3k, q6k): sizes from their definition, the documented bit layout, the
// importance-weighted fit against brute force, and every instruction set's products against exact sums.

private let superBlockTypes: [ElementType] = [.q4k, .q3k, .q6k]

/// What each format is on paper (blip2_kernels.h): bits per value, inputs per sub-block, the level offset,
/// header bytes of an 8-row super-block.
private struct Definition {
    let bits: Int, sub: Int, offset: Int, header: Int, hasMinimum: Bool
    static func of(_ type: ElementType) -> Definition {
        switch type {
        case .q4k: return Definition(bits: 4, sub: 32, offset: 0, header: 16 + 16 + 96, hasMinimum: true)
        case .q3k: return Definition(bits: 3, sub: 16, offset: 4, header: 16 + 96, hasMinimum: false)
        default: return Definition(bits: 6, sub: 16, offset: 32, header: 16 + 128, hasMinimum: false)
        }
    }
}

@Suite struct SuperBlockFormatTests {
    @Test func sizesFollowTheDefinition() throws {
        for type in superBlockTypes {
            let def = Definition.of(type)
            // Per row and 256 inputs: an f16 scale (and f16 minimum-scale), the sub-scales, the values.
            let subScaleBits = def.hasMinimum ? 2 * 8 * 6 : (def.bits == 3 ? 16 * 6 : 16 * 8)
            let rowBits = 16 * (def.hasMinimum ? 2 : 1) + subScaleBits + 256 * def.bits
            #expect(type.bitsPerWeight(cols: 2560) == Double(rowBits) / 256, "\(type)")
            #expect(type.blockRows == 8 && type.blockElements == 256 && type.widthMultiple == 32)
            // ViT-g's 1408 = 5 x 256 + 128: five whole super-blocks and one of 128 inputs (header + its values).
            #expect(type.groupBytes(cols: 1408) == 5 * 8 * rowBits / 8 + def.header + 128 * 8 * def.bits / 8, "\(type)")
            #expect(type.byteCount(shape: [9, 1408]) == 2 * type.groupBytes(cols: 1408)!)
            #expect(type.canStore(shape: [4, 96]) && !type.canStore(shape: [4, 48]) && !type.canStore(shape: [96]))
        }
        #expect(ElementType.q4k.bitsPerWeight(cols: 256) == 4.5 && ElementType.q3k.bitsPerWeight(cols: 256) == 3.4375)
        #expect(ElementType.q6k.bitsPerWeight(cols: 256) == 6.5625)
    }

    /// Packing one level or sub-scale at a time lands exactly on the bits blip2_kernels.h documents.
    @Test(arguments: superBlockTypes)
    func layoutIsTheDocumentedBitPlanes(type: ElementType) throws {
        let def = Definition.of(type)
        let bytes = def.header + 256 * def.bits
        for row in [0, 3, 7] {
            for input in [0, 1, 3, 4, 13, 31, 32, 77, 128, 255] {
                // Expected position of level bit `b` of (row, input), written from the documentation.
                let chunk = def.header + input / 32 * 32 * def.bits, group = input % 32 / 4, v = 4 * row + input % 4
                func position(_ b: Int) -> (byte: Int, bit: Int) {
                    switch def.bits {
                    case 4: return (chunk + 32 * (group / 2) + v, 4 * (group % 2) + b)
                    case 6: return b < 4 ? (chunk + 32 * (group / 2) + v, 4 * (group % 2) + b) : (chunk + 128 + 32 * (group / 4) + v, 2 * (group % 4) + b - 4)
                    default: return b < 2 ? (chunk + 32 * (group / 4) + v, 2 * (group % 4) + b) : (chunk + 64 + v, group)
                    }
                }
                for b in 0..<def.bits {
                    var plain = blip2_superblock_row()
                    withUnsafeMutableBytes(of: &plain.q) { $0[input] = UInt8(1 << b) }
                    var block = [UInt8](repeating: 0, count: bytes)
                    block.withUnsafeMutableBytes { blip2_superblock_pack(type.rawValue, &plain, row, 256, $0.baseAddress!) }
                    let (byte, bit) = position(b)
                    // Sub-scale 0 of q3k is stored biased (0 -> 32): ignore the scale fields.
                    let set = (def.header..<bytes).filter { block[$0] != 0 }
                    #expect(set == [byte] && block[byte] == UInt8(1 << bit), "\(type) row \(row) input \(input) bit \(b): \(set)")
                }
            }
        }
    }

    /// Plain rows survive packing into any row of a panel and unpacking, whole and short super-blocks alike.
    @Test(arguments: superBlockTypes)
    func plainRowsRoundTrip(type: ElementType) throws {
        let def = Definition.of(type)
        var rng = SplitMix(seed: 7)
        for count in [256, 128, 32] {
            var block = [UInt8](repeating: 0, count: def.header + count * def.bits)
            var rows: [blip2_superblock_row] = []
            for r in 0..<8 {
                var plain = blip2_superblock_row()
                plain.d = blip2_f16_to_f32(blip2_f32_to_f16(rng.uniform(0.001, 0.1)))
                plain.dmin = def.hasMinimum ? blip2_f16_to_f32(blip2_f32_to_f16(rng.uniform(0.001, 0.1))) : 0
                let subs = count / def.sub
                let range: ClosedRange<Int> = def.hasMinimum ? 0...63 : (def.bits == 3 ? -32...31 : -128...127)
                withUnsafeMutableBytes(of: &plain.scales) { raw in
                    let s = raw.bindMemory(to: Int16.self)
                    for j in 0..<subs { s[j] = Int16(range.lowerBound + Int(rng.next() % UInt64(range.count))) }
                }
                withUnsafeMutableBytes(of: &plain.mins) { raw in
                    let m = raw.bindMemory(to: Int16.self)
                    for j in 0..<subs where def.hasMinimum { m[j] = Int16(rng.next() % 64) }
                }
                withUnsafeMutableBytes(of: &plain.q) { q in for i in 0..<count { q[i] = UInt8(rng.next() % UInt64(1 << def.bits)) } }
                rows.append(plain)
                block.withUnsafeMutableBytes { blip2_superblock_pack(type.rawValue, &plain, r, count, $0.baseAddress!) }
            }
            for r in 0..<8 {
                var back = blip2_superblock_row()
                block.withUnsafeBytes { blip2_superblock_unpack(type.rawValue, $0.baseAddress!, r, count, &back) }
                #expect(withUnsafeBytes(of: back) { a in withUnsafeBytes(of: rows[r]) { b in a.elementsEqual(b) } },
                        "\(type) count \(count): row \(r) changed on the way through the panel")
            }
        }
    }

    /// Weighted squared error of a fitted super-block row.
    static func fitError(_ type: ElementType, _ x: [Float], _ w: [Float]?) -> Double {
        var plain = blip2_superblock_row()
        var y = [Float](repeating: 0, count: x.count)
        if let w {
            w.withUnsafeBufferPointer { blip2_superblock_fit(type.rawValue, x, $0.baseAddress!, x.count, &plain) }
        } else {
            blip2_superblock_fit(type.rawValue, x, nil, x.count, &plain)
        }
        blip2_superblock_dequantize(type.rawValue, &plain, x.count, &y)
        return zip(zip(x, y), w ?? [Float](repeating: 1, count: x.count)).reduce(0.0) { $0 + Double($1.1) * pow(Double($1.0.0 - $1.0.1), 2) }
    }

    /// Brute force on one sub-block: the best continuous scale (and minimum) on a fine grid, each with its
    /// best levels (for a fixed scale and minimum, rounding each input is optimal whatever the weights).
    static func bruteForce(_ type: ElementType, _ x: ArraySlice<Float>, _ w: ArraySlice<Float>) -> Double {
        let def = Definition.of(type)
        let levels = 1 << def.bits
        let peak = Double(x.map { abs($0) }.max() ?? 0)
        guard peak > 0 else { return 0 }
        func error(scale a: Double, minimum b: Double) -> Double {
            var e = 0.0
            for (xi, wi) in zip(x, w) {
                let level = min(max(((Double(xi) + b) / a).rounded(), Double(-def.offset)), Double(levels - 1 - def.offset))
                e += Double(wi) * pow(Double(xi) - (a * level - b), 2)
            }
            return e
        }
        var best = Double.infinity
        if def.hasMinimum {
            let lo = min(0, Double(x.min()!)), hi = Double(x.max()!)
            for i in 1...120 {
                let a = (hi - lo) / Double(levels - 1) * Double(i) / 100
                for k in 0...60 { best = min(best, error(scale: a, minimum: -lo * Double(k) / 50)) }
            }
        } else {
            for i in 1...4000 {
                let a = 2 * peak / Double(def.offset) * Double(i) / 4000
                best = min(best, error(scale: a, minimum: 0), error(scale: -a, minimum: 0))
            }
        }
        return best
    }

    /// Weighted error of min/max rounding with exact (unrounded) scales, written from its definition: q4k spans
    /// [min(0, min x), max x] of each sub-block in 15 equal steps; the symmetric formats map the sub-block's
    /// input of largest magnitude to the extreme level (-4 or -32).
    static func minMaxError(_ type: ElementType, _ x: [Float], _ w: [Float]) -> Double {
        let def = Definition.of(type)
        var plain = 0.0
        for j in stride(from: 0, to: x.count, by: def.sub) {
            let xs = x[j..<(j + def.sub)], ws = w[j..<(j + def.sub)]
            if def.hasMinimum {
                let lo = min(0, Double(xs.min()!)), step = (Double(xs.max()!) - lo) / 15
                for (xi, wi) in zip(xs, ws) where step > 0 {
                    plain += Double(wi) * pow(Double(xi) - (lo + ((Double(xi) - lo) / step).rounded() * step), 2)
                }
            } else {
                let peak = Double(xs.max { abs($0) < abs($1) }!), step = -peak / Double(def.offset)
                for (xi, wi) in zip(xs, ws) where step != 0 {
                    let level = min(max((Double(xi) / step).rounded(), Double(-def.offset)), Double(def.offset - 1))
                    plain += Double(wi) * pow(Double(xi) - level * step, 2)
                }
            }
        }
        return plain
    }

    /// Whole and short super-blocks whose sub-blocks differ in scale by up to 30x (so most integer sub-scales
    /// are small and their rounding matters), with and without outlier inputs and importance: the fit never
    /// loses to min/max rounding with exact scales by more than the stored scales' rounding allows.
    @Test(arguments: superBlockTypes)
    func fitNeverLosesToMinMaxOnWholeRows(type: ElementType) throws {
        var rng = SplitMix(seed: 29)
        for trial in 0..<60 {
            let count = [256, 128, 96][trial % 3]
            let spread = (0..<(count / 16)).map { _ in rng.uniform(0.03, 1) }
            let x = (0..<count).map { i in rng.uniform(-1, 1) * spread[i / 16] * (trial % 4 == 3 && i % 37 == 0 ? 8 : 1) + (trial % 5 == 1 ? 0.1 : 0) }
            let w = (0..<count).map { i in trial % 2 == 0 ? Float(1) : rng.uniform(0.01, 1) * (i % 11 == 0 ? 40 : 1) }
            let fitted = Self.fitError(type, x, w), plain = Self.minMaxError(type, x, w)
            #expect(fitted <= plain * 1.01 + 1e-12, "\(type) trial \(trial) (\(count) inputs): fit \(fitted) worse than min/max \(plain)")
        }
    }

    /// On super-blocks of one or two sub-blocks (32 inputs), the fit comes close to brute force over the
    /// continuous scales, and never loses to min/max rounding on the format's own grid.
    @Test(arguments: superBlockTypes)
    func fitComesCloseToBruteForce(type: ElementType) throws {
        let def = Definition.of(type)
        var rng = SplitMix(seed: 19)
        var worst = 0.0, total = 0.0
        let trials = 40
        for trial in 0..<trials {
            let x = (0..<32).map { _ in rng.uniform(-1, 1) * (trial % 3 == 0 ? 0.02 : 0.3) + (trial % 4 == 1 ? 0.05 : 0) }
            let w = (0..<32).map { i in trial % 2 == 0 ? Float(1) : rng.uniform(0.01, 1) * (i % 5 == 0 ? 30 : 1) }
            var brute = 0.0
            for j in stride(from: 0, to: 32, by: def.sub) { brute += Self.bruteForce(type, x[j..<(j + def.sub)], w[j..<(j + def.sub)]) }
            let fitted = Self.fitError(type, x, w)
            worst = max(worst, fitted / max(brute, 1e-30))
            total += fitted / max(brute, 1e-30)
            let plain = Self.minMaxError(type, x, w)
            // 1%: the stored scales are f16 and small integers; min/max above is exact.
            #expect(fitted <= plain * 1.01 + 1e-12, "\(type) trial \(trial): fit \(fitted) worse than min/max \(plain)")
        }
        // Brute force searches continuous scales for each sub-block alone; the stored ones share an f16
        // super-block scale and take small integer sub-scales, and with 64 levels (q6k) a scale search finds
        // deep narrow minima on 16 inputs that no stored scale reaches. Measured: q4k 1.07x on average (1.8x at
        // worst), q3k 1.06x (2.3x), q6k 1.28x (3.6x); single blocks where brute force finds almost no error
        // make the worst case noisy.
        let (meanBound, worstBound) = type == .q6k ? (1.35, 4.5) : (1.1, 3.0)
        #expect(total / Double(trials) <= meanBound && worst <= worstBound,
                "\(type): fitted error \(total / Double(trials))x brute force on average, \(worst)x at worst")
    }

    /// Weighting by importance lowers the weighted error of whole rows against the unweighted fit.
    @Test(arguments: superBlockTypes)
    func importanceLowersTheWeightedError(type: ElementType) throws {
        var rng = SplitMix(seed: 23)
        var weighted = 0.0, plain = 0.0
        for _ in 0..<20 {
            let x = (0..<256).map { _ in rng.uniform(-1, 1) * 0.05 }
            let w = (0..<256).map { i in rng.uniform(0.05, 1) * (i % 7 == 0 ? 50 : 1) }
            weighted += Self.fitError(type, x, w)
            var unweighted = blip2_superblock_row()
            var y = [Float](repeating: 0, count: 256)
            blip2_superblock_fit(type.rawValue, x, nil, 256, &unweighted)
            blip2_superblock_dequantize(type.rawValue, &unweighted, 256, &y)
            plain += zip(zip(x, y), w).reduce(0.0) { $0 + Double($1.1) * pow(Double($1.0.0 - $1.0.1), 2) }
        }
        #expect(weighted < 0.9 * plain, "\(type): weighted fit \(weighted) vs unweighted \(plain)")
    }
}

@Suite struct SuperBlockProductTests {
    /// Every instruction set's tiles (one token and many) against exact f64 sums of the stored weights and the
    /// q8k activations, and against the reference table.
    @Test(arguments: KernelISA.supported)
    func productsMatchExactSums(isa: KernelISA) throws {
        let k = try #require(isa.table)
        let ref = try #require(KernelISA.ref.table)
        var rng = SplitMix(seed: 61)
        let context = try ComputeContext(threads: 1, isa: isa)
        for type in superBlockTypes {
            #expect(context.hasTiles(type), "\(isa) has no \(type) tile")
            for (rows, cols, tokens) in [(8, 256, 1), (13, 1408, 1), (8, 128, 5), (21, 544, 4), (3, 32, 9), (17, 2560, 2), (9, 96, 7)] {
                let w = RandomWeights(type: type, rows: rows, cols: cols, rng: &rng)
                let x = (0..<(tokens * cols)).map { _ in rng.activation() }
                let rowBytes = blip2_activation_row_bytes(BLIP2_ACTIVATION_Q8K, cols)
                var activations = [UInt8](repeating: 0, count: tokens * rowBytes)
                activations.withUnsafeMutableBytes { out in
                    for t in 0..<tokens {
                        ref.pointee.quantize_q8k(x.withUnsafeBufferPointer { $0.baseAddress! + t * cols },
                                                 (out.baseAddress! + t * rowBytes).assumingMemoryBound(to: blip2_block_q8k.self), cols)
                    }
                }
                var mine = activations
                mine.withUnsafeMutableBytes { out in
                    for t in 0..<tokens {
                        k.pointee.quantize_q8k(x.withUnsafeBufferPointer { $0.baseAddress! + t * cols },
                                               (out.baseAddress! + t * rowBytes).assumingMemoryBound(to: blip2_block_q8k.self), cols)
                    }
                }
                #expect(mine == activations, "\(isa): q8k quantization differs from the reference (cols \(cols))")
                // The activation values exactly: d * level per input.
                var a = [Double](repeating: 0, count: tokens * cols)
                activations.withUnsafeBytes { raw in
                    for t in 0..<tokens {
                        for i in 0..<cols {
                            let block = raw.baseAddress! + t * rowBytes + i / 256 * MemoryLayout<blip2_block_q8k>.stride
                            let d = Double(block.loadUnaligned(as: Float.self))
                            let q = Int8(bitPattern: block.load(fromByteOffset: MemoryLayout<blip2_block_q8k>.offset(of: \.qs)! + i % 256, as: UInt8.self))
                            a[t * cols + i] = d * Double(q)
                        }
                    }
                }
                var got = [Float](repeating: 0, count: tokens * rows), expected = got
                for (table, out) in [(k, 0), (ref, 1)] {
                    var y = [Float](repeating: .nan, count: tokens * rows)
                    w.bytes.withUnsafeBytes { wr in
                        activations.withUnsafeBytes { xr in
                            blip2_gemm(table, type.rawValue, wr.baseAddress!, w.groupBytes, rows, xr.baseAddress!, rowBytes, tokens, cols, nil, &y, rows)
                        }
                    }
                    if out == 0 { got = y } else { expected = y }
                }
                var bad = 0
                for r in 0..<rows {
                    let values = w.row(r)
                    for t in 0..<tokens {
                        var exact = 0.0, magnitude = 0.0
                        for i in 0..<cols {
                            exact += values[i] * a[t * cols + i]
                            magnitude += abs(values[i] * a[t * cols + i])
                        }
                        // The minimum and offset terms add as much again as the products themselves.
                        let tolerance = Tolerance.floatSum(terms: cols, magnitude: 4 * magnitude)
                        if !(abs(Double(got[t * rows + r]) - exact) <= tolerance) { bad += 1 }
                        if !(abs(Double(got[t * rows + r]) - Double(expected[t * rows + r])) <= 2 * tolerance) { bad += 1 }
                    }
                }
                #expect(bad == 0, "\(isa) \(type) rows \(rows) cols \(cols) tokens \(tokens): \(bad) outputs off")
            }
        }
    }
}
