import Foundation
import Testing
@testable import Blip2Image

@Suite("Decoding matches the reference")
struct DecodeTests {
    @Test("the fixture manifest is readable and complete")
    func manifestLoads() {
        #expect(Manifest.loaded.problem == nil, "\(Manifest.loaded.problem ?? "")")
        #expect(Manifest.cases.count >= 60)
        #expect(Manifest.broken.count >= 20)
        let modes = Set(Manifest.cases.map(\.pilMode))
        #expect(modes.isSuperset(of: ["RGB", "L", "CMYK", "P", "RGBA", "LA", "I;16", "1"]))
    }

    @Test("decoded RGB equals the processor's convert_to_rgb output", arguments: Manifest.cases)
    func decodedPixelsMatch(_ fixture: FixtureCase) throws {
        let image = try ImageDecoder.decode(contentsOf: fixture.url)
        #expect(image.width == fixture.width)
        #expect(image.height == fixture.height)
        if let rgbNPY = fixture.rgbNPY {
            let reference = try loadNPY(rgbNPY)
            #expect(reference.shape == [fixture.height, fixture.width, 3])
            let expected = reference.uint8s
            let differing = zip(image.pixels, expected).filter { $0 != $1 }.count
            #expect(differing == 0, "\(differing) of \(expected.count) samples differ")
        }
        #expect(crc32(image.pixels) == fixture.rgbCRC32, "decoded pixels differ from the reference (CRC-32)")
    }

    @Test("decoding from memory gives the same image as from a file")
    func memoryAndFileAgree() throws {
        let fixture = try #require(Manifest.cases.first { $0.name == "jpeg_progressive_333x251" })
        let data = try Data(contentsOf: fixture.url)
        let fromMemory = try ImageDecoder.decode(data: data, name: "camera frame")
        let fromFile = try ImageDecoder.decode(contentsOf: fixture.url)
        #expect(fromMemory == fromFile)
    }

    @Test("broken inputs fail with the expected typed error", arguments: Manifest.broken)
    func brokenInputFails(_ fixture: BrokenFixture) throws {
        do {
            let image = try ImageDecoder.decode(contentsOf: fixture.url)
            Issue.record("decoded \(image.width)x\(image.height) instead of failing (reference: \(fixture.pil))")
        } catch let error as ImageError {
            #expect(category(of: error) == fixture.expect, "\(error)")
            #expect(error.description.contains(fixture.url.path), "the message names the file: \(error)")
        }
    }

    @Test("a missing file is reported with its path")
    func missingFile() {
        let url = imageFixtures.appendingPathComponent("inputs/does-not-exist.jpg")
        #expect(throws: ImageError.fileNotFound(path: url.path)) { try ImageDecoder.decode(contentsOf: url) }
    }

    @Test("a directory is not an image")
    func directory() {
        #expect {
            try ImageDecoder.decode(contentsOf: imageFixtures)
        } throws: { error in
            guard case ImageError.unreadableFile(let path, _) = error else { return false }
            return path == imageFixtures.path
        }
    }

    @Test("empty data")
    func emptyData() {
        #expect(throws: ImageError.emptyFile(name: "nothing")) { try ImageDecoder.decode(data: Data(), name: "nothing") }
    }

    @Test("the pixel limit is applied from the header, before decoding")
    func pixelLimit() throws {
        for name in ["jpeg_baseline_640x480", "png_rgb8_200x133"] {
            let fixture = try #require(Manifest.cases.first { $0.name == name })
            let limit = fixture.width * fixture.height - 1
            #expect(throws: ImageError.tooManyPixels(name: fixture.url.path, width: fixture.width, height: fixture.height, limit: limit)) {
                try ImageDecoder.decode(contentsOf: fixture.url, options: ImageDecodeOptions(maxPixels: limit))
            }
            let exact = try ImageDecoder.decode(contentsOf: fixture.url, options: ImageDecodeOptions(maxPixels: limit + 1))
            #expect(exact.width == fixture.width)
        }
    }

    @Test("files over the byte limit are refused before reading")
    func fileSizeLimit() throws {
        let fixture = try #require(Manifest.cases.first { $0.name == "png_rgb8_200x133" })
        let size = try Data(contentsOf: fixture.url).count
        let options = ImageDecodeOptions(maxFileBytes: size - 1)
        #expect(throws: ImageError.fileTooLarge(path: fixture.url.path, bytes: size, limit: size - 1)) {
            try ImageDecoder.decode(contentsOf: fixture.url, options: options)
        }
        #expect(throws: ImageError.fileTooLarge(path: "frame", bytes: size, limit: size - 1)) {
            try ImageDecoder.decode(data: try Data(contentsOf: fixture.url), name: "frame", options: options)
        }
    }

    @Test("the progressive scan limit stops a decode inside libjpeg")
    func scanLimit() throws {
        let progressive = try #require(Manifest.cases.first { $0.name == "jpeg_progressive_333x251" })
        #expect(throws: ImageError.self) {
            try ImageDecoder.decode(contentsOf: progressive.url, options: ImageDecodeOptions(maxJPEGScans: 2))
        }
        let baseline = try #require(Manifest.cases.first { $0.name == "jpeg_3x5" })
        #expect(try ImageDecoder.decode(contentsOf: baseline.url, options: ImageDecodeOptions(maxJPEGScans: 1)).width == 3)
    }

    /// libjpeg skips an APPn or COM segment whose length is below 2 (it skips length - 2 bytes when that
    /// is positive) and decodes on; the header checks must see the frame behind it just the same.
    @Test("an empty APP1 or COM segment does not hide the frame header from the checks")
    func emptySegmentsBeforeTheFrame() throws {
        let progressive = try #require(Manifest.cases.first { $0.name == "jpeg_progressive_333x251" })
        var bytes = Array(try Data(contentsOf: progressive.url))
        var position = 2
        while bytes[position + 1] != 0xC2 { position += 2 + (Int(bytes[position + 2]) << 8 | Int(bytes[position + 3])) }
        for (i, byte) in [0x1F, 0x40, 0x1F, 0x40].enumerated() { bytes[position + 5 + i] = UInt8(byte) }   // 8000 x 8000
        let segments: [[UInt8]] = [[], [0xFF, 0xE1, 0x00, 0x00], [0xFF, 0xFE, 0x00, 0x01], [0xFF, 0xE1, 0x00, 0x00, 0xFF, 0xE2, 0x00, 0x00]]
        for segment in segments {
            let crafted = Data(bytes[0..<2] + segment + bytes[2...])
            #expect(segment.isEmpty || crafted.count > bytes.count)
            // Not #expect(throws:), which would print a decoded 8000x8000 image.
            do {
                let image = try ImageDecoder.decode(data: crafted, name: "crafted.jpg")
                Issue.record("segment \(segment): decoded \(image.width)x\(image.height) pixels from \(crafted.count) bytes")
            } catch ImageError.corrupt("crafted.jpg", let reason) {
                #expect(reason.hasPrefix("the header declares 8000x8000 pixels, more than \(crafted.count) bytes"), "\(segment): \(reason)")
            } catch {
                Issue.record("segment \(segment): \(error)")
            }
        }
        // And such a segment in a real image changes nothing (Pillow decodes both to the same pixels).
        let small = try #require(Manifest.cases.first { $0.name == "jpeg_420_odd_45x31" })
        let original = try Data(contentsOf: small.url)
        let withSegments = original.prefix(2) + Data([0xFF, 0xE1, 0x00, 0x00, 0xFF, 0xFE, 0x00, 0x01]) + original.dropFirst(2)
        #expect(try ImageDecoder.decode(data: withSegments, name: "segments.jpg") == ImageDecoder.decode(data: original, name: "original.jpg"))
    }

    @Test("every prefix of a JPEG and a PNG either decodes or fails cleanly")
    func everyTruncation() throws {
        for name in ["jpeg_3x5", "jpeg_gray_progressive_65x33", "png_palette4_interlaced_53x29", "png_la16_40x30"] {
            let fixture = try #require(Manifest.cases.first { $0.name == name })
            let data = try Data(contentsOf: fixture.url)
            let step = max(1, data.count / 150)
            for length in stride(from: 1, to: data.count, by: step) {
                do {
                    _ = try ImageDecoder.decode(data: data.prefix(length), name: name)
                } catch let error as ImageError {
                    switch error {
                    case .truncated, .corrupt, .unrecognizedFormat: break
                    default: Issue.record("\(name) cut to \(length) bytes: unexpected \(error)")
                    }
                }
            }
        }
    }

    @Test("flipped bytes anywhere never crash the process")
    func corruptedBytes() throws {
        var generator = SplitMix64(seed: 7)
        for name in ["jpeg_444_97x61", "jpeg_cmyk_progressive_50x70", "png_palette8_trns_38x16", "png_rgb16_47x29"] {
            let fixture = try #require(Manifest.cases.first { $0.name == name })
            let original = [UInt8](try Data(contentsOf: fixture.url))
            for _ in 0..<60 {
                var bytes = original
                for _ in 0..<4 {
                    let index = Int(generator.next() % UInt64(bytes.count))
                    bytes[index] ^= UInt8(truncatingIfNeeded: generator.next() | 1)
                }
                _ = try? ImageDecoder.decode(data: Data(bytes), name: name)
            }
        }
    }

    @Test("decodes run concurrently and libjpeg's fatal errors stay inside their own decode")
    func concurrentDecodes() async throws {
        let good = try #require(Manifest.cases.first { $0.name == "jpeg_progressive_333x251" })
        let bad = try #require(Manifest.broken.first { $0.file.hasSuffix("jpeg_bogus_huffman_table.jpg") })
        let expected = try ImageDecoder.decode(contentsOf: good.url)
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for index in 0..<24 {
                group.addTask {
                    if index % 2 == 0 {
                        return try ImageDecoder.decode(contentsOf: good.url) == expected
                    }
                    do {
                        _ = try ImageDecoder.decode(contentsOf: bad.url)
                        return false
                    } catch ImageError.corrupt {
                        return true
                    }
                }
            }
            for try await ok in group { #expect(ok) }
        }
    }

    @Test("formats are recognized by content, not by extension")
    func sniffing() {
        func format(_ bytes: [UInt8]) -> ImageFormat? { bytes.withUnsafeBytes { ImageFormat.sniff($0) } }
        #expect(format([0xFF, 0xD8, 0xFF, 0xE0]) == .jpeg)
        #expect(format([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) == .png)
        #expect(format([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A]) == nil)
        #expect(format(Array("GIF89a".utf8)) == .gif)
        #expect(format([0x00, 0x00, 0x01, 0x00, 0x01, 0x00]) == .ico)
        // A start-of-image marker and nothing else is a truncated JPEG, not an unknown format.
        #expect(format([0xFF, 0xD8]) == .jpeg)
        #expect(format([0xFF, 0xD8, 0x00, 0x00]) == nil)
        #expect(format([]) == nil)
    }

    @Test("the PNG chunk checksum is the standard CRC-32")
    func standardCRC() {
        #expect(crc32(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(crc32([]) == 0)
    }

    private func category(of error: ImageError) -> String {
        switch error {
        case .fileNotFound: return "fileNotFound"
        case .unreadableFile: return "unreadableFile"
        case .fileTooLarge: return "fileTooLarge"
        case .emptyFile: return "emptyFile"
        case .unrecognizedFormat: return "unrecognizedFormat"
        case .unsupportedFormat: return "unsupportedFormat"
        case .unsupportedImage: return "unsupportedImage"
        case .tooManyPixels: return "tooManyPixels"
        case .truncated: return "truncated"
        case .corrupt: return "corrupt"
        case .decoderUnavailable: return "decoderUnavailable"
        case .invalidConfig: return "invalidConfig"
        }
    }
}

/// A small deterministic generator for reproducible corruption.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
