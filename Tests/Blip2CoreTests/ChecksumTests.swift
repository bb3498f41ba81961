import CKernels
import Testing
@testable import Blip2Core

@Suite struct ChecksumTests {
    @Test func standardCheckValue() {
        // The CRC-32C catalogue's check value for the ASCII string "123456789".
        let text = Array("123456789".utf8)
        #expect(blip2_crc32c_ref(0, text, text.count) == 0xE306_9283)
        #expect(blip2_crc32c(0, text, text.count) == 0xE306_9283)
        #expect(crc32c(text) == 0xE306_9283)
    }

    @Test func hardwarePathMatchesReferenceOnOddLengths() {
        var rng = SplitMix(seed: 7)
        let data = (0..<5000).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        for length in [0, 1, 3, 7, 8, 9, 63, 64, 65, 1000, 4999] {
            for start in [0, 1, 5] where start + length <= data.count {
                data.withUnsafeBytes { buffer in
                    let slice = buffer.baseAddress! + start
                    #expect(blip2_crc32c(0, slice, length) == blip2_crc32c_ref(0, slice, length), "length \(length) at \(start)")
                }
            }
        }
    }

    @Test func continuingEqualsOneShot() {
        let text = Array("The quick brown fox jumps over the lazy dog".utf8)
        let whole = crc32c(text)
        let first = crc32c(Array(text[0..<10]))
        #expect(crc32c(Array(text[10...]), continuing: first) == whole)
        #expect(whole == 0x2262_0404)   // published CRC-32C of this sentence
    }
}
