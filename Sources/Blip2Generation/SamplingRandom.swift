// The sampler's random numbers: our own generator, so a seed gives the same tokens on every platform.
// (torch's Philox/Mersenne streams cannot be reproduced here; only the distribution sampled from matches.)

/// xoshiro256** (Blackman & Vigna), its 256-bit state filled from the seed by SplitMix64.
///
/// Sequence `i` of a sampling call uses seed `options.seed &+ i &* 0x9E37_79B9_7F4A_7C15`, so the first
/// sequences are the same whatever `numReturnSequences` is.
struct SamplingRandom: RandomNumberGenerator {
    private var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64

    init(seed: UInt64, stream: Int = 0) {
        var mix = seed &+ UInt64(truncatingIfNeeded: stream) &* 0x9E37_79B9_7F4A_7C15
        func splitMix(_ x: inout UInt64) -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s0 = splitMix(&mix)
        s1 = splitMix(&mix)
        s2 = splitMix(&mix)
        s3 = splitMix(&mix)
    }

    mutating func next() -> UInt64 {
        let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = s3 << 45 | s3 >> 19
        return result
    }

    /// Uniform in [0, 1) with 53 random bits.
    mutating func nextUnit() -> Double {
        Double(next() >> 11) * 0x1p-53
    }
}
