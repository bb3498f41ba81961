import Foundation
import CKernels
import Testing
@testable import Blip2Core

// Swift's Float16 is an independent IEEE 754 implementation: the reference for our bit twiddling.
#if arch(x86_64) || arch(arm64)
@Suite struct HalfTests {
    @Test func everyHalfConvertsExactly() {
        for bits in 0...UInt16.max {
            let expected = Float(Float16(bitPattern: bits))
            let got = blip2_f16_to_f32(bits)
            if expected.isNaN {
                #expect(got.isNaN)
            } else {
                #expect(got.bitPattern == expected.bitPattern, "f16 \(bits)")
            }
        }
    }

    @Test func floatsRoundToNearestEven() {
        var rng = SplitMix(seed: 1)
        var values: [Float] = [0, -0, 1, 65504, 65519.99, 65520, -65520, 1e-8, 2.98e-8, 2.9802322e-8, 5.96e-8, 6.1035156e-5,
                               6.1e-5, .infinity, -.infinity, .greatestFiniteMagnitude, .leastNonzeroMagnitude]
        // Exact ties between neighbouring halves, across normal and subnormal ranges.
        for bits in stride(from: UInt16(0), to: 0x7bff, by: 37) {
            let a = Float(Float16(bitPattern: bits)), b = Float(Float16(bitPattern: bits + 1))
            values.append((a + b) / 2)
            values.append(-(a + b) / 2)
        }
        for _ in 0..<200_000 { values.append(Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()))) }
        for x in values where !x.isNaN {
            #expect(blip2_f32_to_f16(x) == Float16(x).bitPattern, "f32 \(x) (\(String(x.bitPattern, radix: 16)))")
        }
        #expect(Float16(bitPattern: blip2_f32_to_f16(.nan)).isNaN)
    }

    @Test func dispatchedRowsMatchReference() {
        var rng = SplitMix(seed: 2)
        for n in [0, 1, 7, 8, 9, 31, 64, 1001] {
            let halves = (0..<n).map { _ in UInt16(truncatingIfNeeded: rng.next()) & 0x7bff | (rng.next() & 1 == 0 ? 0 : 0x8000) }
            var fast = [Float](repeating: 0, count: n), ref = [Float](repeating: 0, count: n)
            blip2_f16_to_f32_row(halves, &fast, n)
            blip2_f16_to_f32_row_ref(halves, &ref, n)
            #expect(fast.map(\.bitPattern) == ref.map(\.bitPattern))
            var back = [UInt16](repeating: 0, count: n), backRef = [UInt16](repeating: 0, count: n)
            let floats = (0..<n).map { _ in Float(Double(rng.next() % 2_000_001) / 1000 - 1000) * 1.37 }
            blip2_f32_to_f16_row(floats, &back, n)
            blip2_f32_to_f16_row_ref(floats, &backRef, n)
            #expect(back == backRef)
        }
    }

    @Test func bfloat16IsTheHighHalf() {
        #expect(blip2_bf16_to_f32(0x3f80) == 1)
        #expect(blip2_bf16_to_f32(0xc049) == Float(bitPattern: 0xc049_0000))
    }
}
#endif

/// A small deterministic generator for test data.
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
    /// Standard normal (Box-Muller).
    mutating func normal() -> Float {
        let u1 = (Double(next() >> 11) + 1) / 9_007_199_254_740_993.0
        let u2 = Double(next() >> 11) / 9_007_199_254_740_992.0
        return Float((-2 * log(u1)).squareRoot() * cos(2 * .pi * u2))
    }
}
