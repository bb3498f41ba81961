import Blip2Core
import CKernels
import Foundation

// MARK: - Random data and tolerances shared by the kernel tests

struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
    mutating func uniform(_ lo: Float, _ hi: Float) -> Float { lo + (hi - lo) * Float(next() >> 40) / Float(1 << 24) }
    /// Mostly within +-1, with an occasional value 30x larger (the outlier channels real activations have).
    mutating func activation() -> Float { uniform(-1, 1) * (next() % 17 == 0 ? 30 : 1) }
}

enum Tolerance {
    /// Unit roundoff of f32.
    static let u = 5.9604645e-8
    /// Two float sums of the same `terms` terms in different orders differ by at most 2(n-1)u sum|terms|;
    /// 16 extra terms cover per-block scale products and the final lane folds.
    static func floatSum(terms: Int, magnitude: Double) -> Double { 2 * Double(terms + 16) * u * magnitude + 1e-30 }
}

/// One weight matrix in every stored form the kernels take, from the same random source.
struct RandomWeights {
    let type: ElementType
    let rows: Int
    let cols: Int
    let bytes: [UInt8]
    var groupBytes: Int { type.groupBytes(cols: cols)! }

    init(type: ElementType, rows: Int, cols: Int, rng: inout SplitMix) {
        self.type = type
        self.rows = rows
        self.cols = cols
        var bytes: [UInt8] = []
        switch type {
        case .f32:
            for _ in 0..<(rows * cols) { withUnsafeBytes(of: rng.activation()) { bytes += $0 } }
        case .f16:
            for _ in 0..<(rows * cols) { withUnsafeBytes(of: blip2_f32_to_f16(rng.uniform(-0.2, 0.2))) { bytes += $0 } }
        case .q8:
            for _ in 0..<(rows * cols / 32) {
                withUnsafeBytes(of: blip2_f32_to_f16(rng.uniform(0.001, 0.05))) { bytes += $0 }
                for _ in 0..<32 { bytes.append(UInt8(truncatingIfNeeded: rng.next())) }   // -128 included
            }
        case .q4:
            for _ in 0..<(rows * cols / 32) {
                withUnsafeBytes(of: blip2_f32_to_f16(rng.uniform(0.001, 0.05))) { bytes += $0 }
                withUnsafeBytes(of: blip2_f32_to_f16(rng.uniform(-0.4, 0.1))) { bytes += $0 }
                for _ in 0..<16 { bytes.append(UInt8(truncatingIfNeeded: rng.next())) }
            }
        default:
            // Panels: quantized from random values by the converter's routine (padding rows zero).
            let values = (0..<(rows * cols)).map { _ in rng.uniform(-0.2, 0.2) * (rng.next() % 13 == 0 ? 8 : 1) }
            bytes = [UInt8](repeating: 0xa5, count: type.byteCount(shape: [rows, cols])!)
            bytes.withUnsafeMutableBytes { out in type.traits.from_f32(values, rows, cols, out.baseAddress!) }
        }
        self.bytes = bytes
    }

    var isQuantized: Bool { type.takesQuantizedActivations }
    var elementType: String { type.name }

    /// Row r as the f64 values the kernels multiply (the stored values, exactly).
    func row(_ r: Int) -> [Double] {
        var out = [Float](repeating: 0, count: cols)
        bytes.withUnsafeBytes { raw in type.traits.to_f32(raw.baseAddress!, r, cols, &out) }
        return out.map(Double.init)
    }

    /// The row format (q8 or q4) holding the same values as a quantized type.
    var rowFormat: ElementType { type == .q8 || type == .q8p ? .q8 : .q4 }

    /// Block b of row r in the row format's bytes (34 for q8, 20 for q4), unpacked from a panel if need be.
    func rowBlock(_ r: Int, _ b: Int) -> [UInt8] {
        let nb = cols / 32
        return bytes.withUnsafeBytes { raw -> [UInt8] in
            switch type {
            case .q8:
                return Array(raw[(r * nb + b) * 34..<((r * nb + b) * 34 + 34)])
            case .q4:
                return Array(raw[(r * nb + b) * 20..<((r * nb + b) * 20 + 20)])
            case .q8p:
                var block = blip2_block_q8()
                let panel = raw.baseAddress!.assumingMemoryBound(to: blip2_panel_q8.self) + (r / 8) * nb + b
                blip2_unpack_q8(panel, r % 8, &block)
                return withUnsafeBytes(of: block) { Array($0) }
            default:
                var block = blip2_block_q4()
                let panel = raw.baseAddress!.assumingMemoryBound(to: blip2_panel_q4.self) + (r / 8) * nb + b
                blip2_unpack_q4(panel, r % 8, &block)
                return withUnsafeBytes(of: block) { Array($0) }
            }
        }
    }
}

/// Activation rows quantized by the reference, and their exact f64 values.
func quantizedActivations(_ x: [Float], tokens: Int, cols: Int) -> (blocks: [blip2_block_q8a], values: [Double]) {
    let nb = cols / 32
    var blocks = [blip2_block_q8a](repeating: blip2_block_q8a(), count: tokens * nb)
    let ref = blip2_kernels_for(BLIP2_ISA_REF)!.pointee
    x.withUnsafeBufferPointer { src in
        blocks.withUnsafeMutableBufferPointer { dst in
            for t in 0..<tokens { ref.quantize_q8a(src.baseAddress! + t * cols, dst.baseAddress! + t * nb, cols) }
        }
    }
    var values: [Double] = []
    values.reserveCapacity(tokens * cols)
    for block in blocks {
        withUnsafeBytes(of: block.qs) { q in for i in 0..<32 { values.append(Double(block.d) * Double(Int8(bitPattern: q[i]))) } }
    }
    return (blocks, values)
}
