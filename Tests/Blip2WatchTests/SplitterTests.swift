import Blip2Image
import Foundation
import Testing
@testable import Blip2Watch

/// Feeds `bytes` in chunks of the given sizes (cycled) and returns every event, the final one included.
func split(_ bytes: [UInt8], chunks: [Int], maxFrameBytes: Int = 32 << 20) -> (events: [MJPEGSplitter.Event], skipped: Int) {
    var splitter = MJPEGSplitter(maxFrameBytes: maxFrameBytes)
    var events: [MJPEGSplitter.Event] = []
    var start = 0, next = 0
    while start < bytes.count {
        let end = min(bytes.count, start + chunks[next % chunks.count])
        events += splitter.push(Array(bytes[start..<end]))
        start = end
        next += 1
    }
    if let last = splitter.finish() { events.append(last) }
    return (events, splitter.skippedBytes)
}

func frames(_ events: [MJPEGSplitter.Event]) -> [Data] {
    events.compactMap { if case .frame(let data) = $0 { return data } else { return nil } }
}

@Suite struct MJPEGSplitterTests {
    static let testsrcFrames = 20

    /// ffmpeg's testsrc as Motion-JPEG, and ffmpeg's own cut of it into files (its mjpeg parser, -c copy).
    static func ffmpegStream() throws -> (stream: [UInt8], files: [Data]) {
        let folder = try TemporaryFolder()
        let stream = try ffmpeg(["-f", "lavfi", "-i", "testsrc=size=96x72:rate=30", "-frames:v", "\(testsrcFrames)", "-q:v", "4", "-f", "mjpeg", "-"])
        try stream.write(to: URL(fileURLWithPath: folder.path("stream.mjpeg")))
        _ = try ffmpeg(["-f", "mjpeg", "-i", folder.path("stream.mjpeg"), "-c", "copy", "-f", "image2", folder.path("%04d.jpg")])
        let files = try (1...testsrcFrames).map { try Data(contentsOf: URL(fileURLWithPath: folder.path(String(format: "%04d.jpg", $0)))) }
        return (Array(stream), files)
    }

    @Test func cutsAnFFmpegStreamAsFFmpegDoes() throws {
        let (stream, files) = try Self.ffmpegStream()
        #expect(files.count == Self.testsrcFrames)
        for chunks in [[stream.count], [1], [2, 3, 5], [7], [4096], [65536]] {
            let result = split(stream, chunks: chunks)
            #expect(result.events.count == files.count, "chunks \(chunks)")
            #expect(frames(result.events) == files, "chunks \(chunks)")
            #expect(result.skipped == 0)
        }
        for frame in frames(split(stream, chunks: [1000]).events) {
            #expect(try ImageDecoder.decode(data: frame, name: "frame").width == 96)
        }
    }

    @Test func everyFixtureJPEGComesBackWhole() throws {
        let names = ["jpeg_baseline_640x480", "jpeg_progressive_333x251", "jpeg_444_97x61", "jpeg_422_121x77", "jpeg_420_odd_45x31",
                     "jpeg_gray_200x150", "jpeg_gray_progressive_65x33", "jpeg_cmyk_160x120", "jpeg_ycck_160x120",
                     "jpeg_cmyk_progressive_50x70", "jpeg_restart_markers_150x100", "jpeg_adobe_rgb_64x48",
                     "jpeg_exif_orientation_80x40", "jpeg_1x1", "jpeg_3x5", "jpeg_corrupt_entropy_120x90"]
        let files = try names.map { try Data(contentsOf: imageFixtures.appendingPathComponent("inputs/\($0).jpg")) }
        // What a multipart stream puts between images; it holds no 0xFF, so none of it can start an image.
        let between = Array("\r\n--myboundary\r\nContent-Type: image/jpeg\r\nContent-Length: 1234\r\n\r\n".utf8)
        var stream: [UInt8] = []
        for file in files { stream += between + file }
        stream += between
        // Made by Tools/make_image_fixtures.py: a JPEG followed by this text.
        let garbage = Array("trailing bytes after the end of image".utf8)
        let trailing = try Data(contentsOf: imageFixtures.appendingPathComponent("inputs/jpeg_trailing_garbage_60x40.jpg"))
        stream += Array(trailing)
        for chunks in [[stream.count], [1], [13, 1, 255]] {
            let result = split(stream, chunks: chunks)
            #expect(frames(result.events) == files + [trailing.dropLast(garbage.count)], "chunks \(chunks)")
            #expect(result.events.count == files.count + 1)
            #expect(result.skipped == between.count * (files.count + 1) + garbage.count)
        }
    }

    @Test func aThumbnailInsideAnAPP1SegmentIsNotAFrame() throws {
        let thumbnail = [UInt8](try Data(contentsOf: imageFixtures.appendingPathComponent("inputs/jpeg_1x1.jpg")))
        let outer = [UInt8](try Data(contentsOf: imageFixtures.appendingPathComponent("inputs/jpeg_3x5.jpg")))
        // An EXIF-style APP1 segment carrying a whole JPEG (start-of-image to end-of-image) as its payload.
        let payload = Array("Exif\0\0".utf8) + thumbnail
        let length = payload.count + 2
        let image = [0xFF, 0xD8, 0xFF, 0xE1, UInt8(length >> 8), UInt8(length & 0xFF)] + payload + outer.dropFirst(2)
        let result = split(image + image, chunks: [3])
        #expect(frames(result.events) == [Data(image), Data(image)])
        let decoded = try ImageDecoder.decode(data: Data(image), name: "with thumbnail")
        #expect(decoded.width == 3 && decoded.height == 5)
    }

    @Test func stuffedBytesRestartMarkersAndFillBytesStayInsideTheScan() {
        // SOI, a minimal SOS segment, entropy data with a stuffed 0xFF, a restart marker, then fill bytes before EOI.
        let image: [UInt8] = [0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02, 0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56, 0xFF, 0xFF, 0xFF, 0xD9]
        // Fill bytes before a marker segment too, and a second scan after a table segment.
        let twoScans: [UInt8] = [0xFF, 0xD8, 0xFF, 0xFF, 0xC4, 0x00, 0x03, 0xD9, 0xFF, 0xDA, 0x00, 0x03, 0xD8, 0x01,
                                 0xFF, 0xC4, 0x00, 0x02, 0xFF, 0xDA, 0x00, 0x02, 0xD9, 0xFF, 0xD9]
        for chunks in [[100], [1], [2]] {
            #expect(split(image + twoScans + image, chunks: chunks).events == [.frame(Data(image)), .frame(Data(twoScans)), .frame(Data(image))])
        }
    }

    /// USB webcams send Motion-JPEG frames without Huffman tables (the standard ones are implied, AVI1 style):
    /// such frames split and decode to the same pixels as the frame that carries the standard tables.
    @Test func webcamFramesWithoutHuffmanTables() throws {
        let full = [UInt8](try ffmpeg(["-i", examplesFolder.appendingPathComponent(DemoExamples.loaded.examples[0].file).path,
                                       "-q:v", "3", "-huffman", "default", "-f", "mjpeg", "-"]))
        // Drop every DHT segment before the scan, walking the segments by their lengths.
        var stripped: [UInt8] = [0xFF, 0xD8]
        var i = 2
        while i + 4 <= full.count, full[i] == 0xFF, full[i + 1] != 0xDA {
            let end = i + 2 + (Int(full[i + 2]) << 8 | Int(full[i + 3]))
            if full[i + 1] != 0xC4 { stripped += full[i..<end] }
            i = end
        }
        stripped += full[i...]
        #expect(stripped.count < full.count - 400)  // the four standard tables take 418 bytes
        let events = split(stripped + stripped, chunks: [100]).events
        #expect(events == [.frame(Data(stripped)), .frame(Data(stripped))])
        let reference = try ImageDecoder.decode(data: Data(full), name: "with tables")
        #expect(try ImageDecoder.decode(data: Data(stripped), name: "without tables") == reference)
    }

    @Test func aFrameCutShortIsReportedAndTheNextOneKept() throws {
        let (_, files) = try Self.ffmpegStream()
        let first = [UInt8](files[0]), second = [UInt8](files[1])
        let half = first.count / 2 + 1  // inside the entropy-coded data of a 96x72 frame
        let result = split(Array(first[..<half]) + second + Array(first[..<half]), chunks: [1, 64])
        #expect(result.events == [.dropped(.truncated, bytes: half), .frame(Data(second)), .dropped(.truncated, bytes: half)])
    }

    @Test func aFrameOverTheLimitIsDroppedUnkept() throws {
        let (_, files) = try Self.ffmpegStream()
        let small = [UInt8](try Data(contentsOf: imageFixtures.appendingPathComponent("inputs/jpeg_1x1.jpg")))
        let large = [UInt8](files[0])
        #expect(large.count > small.count + 100)
        let limit = small.count + 10
        for chunks in [[large.count * 3], [1], [100]] {
            let result = split(large + small + large, chunks: chunks, maxFrameBytes: limit)
            #expect(result.events == [.dropped(.tooLarge(limit: limit), bytes: large.count), .frame(Data(small)),
                                      .dropped(.tooLarge(limit: limit), bytes: large.count)], "chunks \(chunks)")
        }
    }

    @Test func aFrameOverTheLimitCutShortIsReportedTooLarge() throws {
        let (_, files) = try Self.ffmpegStream()
        let small = [UInt8](try Data(contentsOf: imageFixtures.appendingPathComponent("inputs/jpeg_1x1.jpg")))
        let large = [UInt8](files[0])
        let limit = small.count + 10
        let half = large.count / 2 + 1
        #expect(half > limit)
        // Cut by the next image's start, and by the end of the stream: past the limit either way.
        for chunks in [[large.count * 3], [1], [100]] {
            let result = split(Array(large[..<half]) + small + Array(large[..<half]), chunks: chunks, maxFrameBytes: limit)
            #expect(result.events == [.dropped(.tooLarge(limit: limit), bytes: half), .frame(Data(small)),
                                      .dropped(.tooLarge(limit: limit), bytes: half)], "chunks \(chunks)")
        }
    }

    @Test func aBrokenStructureIsDroppedAndTheStreamResyncs() throws {
        let small = [UInt8](try Data(contentsOf: imageFixtures.appendingPathComponent("inputs/jpeg_1x1.jpg")))
        let badMarker: [UInt8] = [0xFF, 0xD8, 0xFF, 0x00, 0x11]
        let notAMarker: [UInt8] = [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x01, 0x02, 0x7A]
        let badLength: [UInt8] = [0xFF, 0xD8, 0xFF, 0xDB, 0x00, 0x01]
        let result = split(badMarker + small + notAMarker + small + badLength + small, chunks: [1, 3])
        #expect(result.events == [
            .dropped(.invalidMarker(byte: 0x00, offset: 3), bytes: 4), .frame(Data(small)),
            .dropped(.invalidMarker(byte: 0x7A, offset: 8), bytes: 9), .frame(Data(small)),
            .dropped(.invalidSegmentLength(marker: 0xDB, offset: 2), bytes: 6), .frame(Data(small)),
        ])
        #expect(result.skipped == 1)  // the byte after the bad marker
    }

    /// Random bytes rich in marker values: never a crash, every byte accounted for exactly once, frames
    /// well formed and within the limit, and the same result however the bytes are cut.
    @Test func hostileBytesAreSafe() {
        var random = SeededGenerator(state: 12)
        let alphabet: [UInt8] = [0xFF, 0xFF, 0xFF, 0xD8, 0xD9, 0xDA, 0x00, 0x00, 0x02, 0xD0, 0xC4, 0xE1]
        let limit = 600
        for round in 0..<400 {
            let count = Int.random(in: 0...3000, using: &random)
            var bytes = [UInt8](repeating: 0, count: count)
            for i in 0..<count {
                bytes[i] = Bool.random(using: &random) ? alphabet.randomElement(using: &random)! : UInt8.random(in: 0...255, using: &random)
            }
            let whole = split(bytes, chunks: [count + 1], maxFrameBytes: limit)
            let cut = split(bytes, chunks: [Int.random(in: 1...17, using: &random), 1, 2], maxFrameBytes: limit)
            #expect(whole.events == cut.events, "round \(round)")
            #expect(whole.skipped == cut.skipped, "round \(round)")
            var accounted = whole.skipped
            for event in whole.events {
                switch event {
                case .frame(let data):
                    #expect(data.count <= limit && data.count >= 4)
                    #expect(data.prefix(2) == Data([0xFF, 0xD8]) && data.suffix(2) == Data([0xFF, 0xD9]))
                    accounted += data.count
                case .dropped(_, let dropped):
                    accounted += dropped
                }
            }
            #expect(accounted == count, "round \(round)")
        }
    }
}
