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

    /// RFC 3720 (iSCSI), appendix B.4: the CRC-32C of four 32-byte patterns.
    @Test func rfc3720Vectors() {
        let vectors: [([UInt8], UInt32)] = [
            ([UInt8](repeating: 0, count: 32), 0x8A91_36AA),
            ([UInt8](repeating: 0xFF, count: 32), 0x62A8_AB43),
            ((0..<32).map { UInt8($0) }, 0x46DD_794E),
            ((0..<32).reversed().map { UInt8($0) }, 0x113F_DB5C),
        ]
        for (bytes, expected) in vectors {
            #expect(blip2_crc32c_ref(0, bytes, bytes.count) == expected, "\(bytes.prefix(2))...")
            #expect(blip2_crc32c(0, bytes, bytes.count) == expected, "\(bytes.prefix(2))...")
        }
    }

    /// The table behind the reference path is built on first use; threads starting at once must all see it
    /// whole (it is built under pthread_once).
    @Test func referenceFromManyThreadsAtOnce() async {
        let text = Array("123456789".utf8)
        let results = await withTaskGroup(of: UInt32.self) { group in
            for _ in 0..<16 { group.addTask { blip2_crc32c_ref(0, text, text.count) } }
            return await group.reduce(into: [UInt32]()) { $0.append($1) }
        }
        #expect(results.count == 16 && results.allSatisfy { $0 == 0xE306_9283 })
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
