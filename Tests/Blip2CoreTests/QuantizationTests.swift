import CKernels
import Foundation
import Testing
@testable import Blip2Core

// Bounds from first principles (docs/FORMAT.md, "Error bounds"):
// - q8: every element within half a step of its block's stored scale d: |x - x^| <= d/2 (plus float rounding);
// - q4: per block, squared error no worse than the plain min/max quantizer computed here independently,
//   whose elements are each within d/2 of the truth once the f16 minimum's rounding is accounted for.
@Suite struct QuantizationTests {
    static func sample(_ n: Int, seed: UInt64, outliers: Bool = true) -> [Float] {
        var rng = SplitMix(seed: seed)
        var x = (0..<n).map { _ in rng.normal() * 0.02 }
        if outliers { for i in stride(from: 5, to: n, by: 97) { x[i] *= 40 } }
        return x
    }

    @Test func traitsDescribeTheBlockStructs() {
        #expect(ElementType.q8.blockElements == 32 && ElementType.q8.blockBytes == MemoryLayout<blip2_block_q8>.size)
        #expect(ElementType.q4.blockElements == 32 && ElementType.q4.blockBytes == MemoryLayout<blip2_block_q4>.size)
        #expect(ElementType.f32.blockBytes == 4 && ElementType.f16.blockBytes == 2)
        #expect(ElementType.q4.byteCount(shape: [1, 64]) == 40)
        #expect(ElementType.q4.byteCount(shape: [1, 33]) == nil)
        #expect(ElementType.f32.byteCount(shape: [Int.max / 2]) == nil)
        #expect(ElementType.q4p.byteCount(shape: [Int.max / 32, 64]) == nil)
        #expect(ElementType.q8.canStore(shape: [3, 64]) && !ElementType.q8.canStore(shape: [3, 40]) && !ElementType.q8.canStore(shape: [64]))
        #expect(ElementType(name: "q4") == .q4 && ElementType(name: "int4") == nil)
    }

    @Test func q8ElementsWithinHalfAStep() {
        let n = 32 * 512
        let x = Self.sample(n, seed: 3)
        var blocks = [blip2_block_q8](repeating: blip2_block_q8(), count: n / 32)
        var y = [Float](repeating: 0, count: n)
        blip2_quantize_row_q8(x, &blocks, n)
        blip2_dequantize_row_q8(blocks, &y, n)
        for b in 0..<(n / 32) {
            let d = blip2_f16_to_f32(blocks[b].d)
            let amax = x[(b * 32)..<(b * 32 + 32)].map(abs).max()!
            #expect(abs(d - amax / 127) <= amax / 127 * 0.001 + 1e-12)
            for i in (b * 32)..<(b * 32 + 32) {
                #expect(abs(x[i] - y[i]) <= d * 0.5 * 1.0001 + 1e-12)
            }
        }
        let rel = relativeRMS(x, y)
        #expect(rel < 0.02, "q8 relative RMS \(rel)")
    }

    @Test func q4NoWorseThanMinMaxRounding() {
        let n = 32 * 512
        let x = Self.sample(n, seed: 4)
        var blocks = [blip2_block_q4](repeating: blip2_block_q4(), count: n / 32)
        var y = [Float](repeating: 0, count: n)
        blip2_quantize_row_q4(x, &blocks, n)
        blip2_dequantize_row_q4(blocks, &y, n)
        var naiveAll = [Float](repeating: 0, count: n)
        for b in 0..<(n / 32) {
            let block = Array(x[(b * 32)..<(b * 32 + 32)])
            let naive = Self.minMaxQuantize(block)
            naiveAll.replaceSubrange((b * 32)..<(b * 32 + 32), with: naive.values)
            let ours = zip(block, y[(b * 32)..<(b * 32 + 32)]).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +)
            let theirs = zip(block, naive.values).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +)
            #expect(ours <= theirs * (1 + 1e-6) + 1e-18, "block \(b)")
            for (v, w) in zip(block, naive.values) { #expect(abs(v - w) <= naive.step * 0.5 * 1.001 + naive.minRounding + 1e-9) }
        }
        let ours = relativeRMS(x, y), naive = relativeRMS(x, naiveAll)
        #expect(ours < 0.12, "q4 relative RMS \(ours)")
        #expect(ours < naive * 0.97, "the fitted q4 (\(ours)) should beat min/max rounding (\(naive))")
    }

    /// q4 stores a constant block exactly (its minimum); q8 keeps zeros exact and constants within half a step.
    @Test func constantAndZeroBlocks() {
        for value: Float in [0, 0.5, -3] {
            let x = [Float](repeating: value, count: 64)
            var q8 = [blip2_block_q8](repeating: blip2_block_q8(), count: 2)
            var q4 = [blip2_block_q4](repeating: blip2_block_q4(), count: 2)
            var y = [Float](repeating: 1, count: 64)
            blip2_quantize_row_q8(x, &q8, 64)
            blip2_dequantize_row_q8(q8, &y, 64)
            let step = blip2_f16_to_f32(q8[0].d)
            #expect(zip(x, y).allSatisfy { abs($0 - $1) <= step / 2 })
            if value == 0 { #expect(y == x) }
            blip2_quantize_row_q4(x, &q4, 64)
            blip2_dequantize_row_q4(q4, &y, 64)
            #expect(y == x)
        }
    }

    @Test func genericDequantizeMatchesPerFormat() {
        let x = Self.sample(128, seed: 9)
        var q4 = [blip2_block_q4](repeating: blip2_block_q4(), count: 4)
        blip2_quantize_row_q4(x, &q4, 128)
        var a = [Float](repeating: 0, count: 128), b = [Float](repeating: 0, count: 128)
        blip2_dequantize_row_q4(q4, &a, 128)
        #expect(blip2_to_f32(ElementType.q4.rawValue, q4, &b, 128))
        #expect(a == b)
        #expect(!blip2_to_f32(77, q4, &b, 128))
        #expect(!blip2_to_f32(ElementType.q4.rawValue, q4, &b, 100))
    }

    /// Plain asymmetric 4-bit rounding with f16 parameters, written independently of the C code.
    static func minMaxQuantize(_ x: [Float]) -> (values: [Float], step: Float, minRounding: Float) {
        let lo = x.min()!, hi = x.max()!
        let d = Float(Float16((hi - lo) / 15)), m = Float(Float16(lo))
        let values = x.map { v -> Float in
            let q = d > 0 ? min(15, max(0, ((v - m) / d).rounded())) : 0
            return d * q + m
        }
        return (values, d, abs(m - lo) + abs(d * 15 - (hi - lo)))
    }
}

func relativeRMS(_ x: [Float], _ y: [Float]) -> Double {
    var e = 0.0, n = 0.0
    for (a, b) in zip(x, y) {
        e += Double(a - b) * Double(a - b)
        n += Double(a) * Double(a)
    }
    return (e / n).squareRoot()
}
