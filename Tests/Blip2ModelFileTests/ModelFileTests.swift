import Foundation
import Testing
@testable import Blip2Core
@testable import Blip2ModelFile

@Suite struct ModelFileRoundTripTests {
    @Test(arguments: [TensorCompression.none, .zstd])
    func tensorsAndSectionsRoundTrip(compression: TensorCompression) throws {
        let dir = TemporaryDirectory()
        let path = dir.path("m.blip2")
        let small = (0..<10).map { Float($0) * 0.5 }
        let big = (0..<(300_000)).map { Float(sin(Double($0))) }   // 1.2 MB: page-aligned
        let halves: [UInt16] = [0x3c00, 0xc000, 0x0001, 0x7bff]
        let writer = try ModelFileWriter(destination: path)
        try floatBytes(small).withUnsafeBytes { try writer.addTensor(name: "a.bias", type: .f32, shape: [10], bytes: $0, compression: compression) }
        try floatBytes(big).withUnsafeBytes { try writer.addTensor(name: "b.weight", type: .f32, shape: [1000, 300], bytes: $0, compression: compression) }
        try halves.withUnsafeBytes { try writer.addTensor(name: "c", type: .f16, shape: [2, 2], bytes: $0, compression: compression) }
        try writer.finish(metadata: [MetadataSection(name: "config", json: Array(#"{"x": 1}"#.utf8)), MetadataSection(name: "empty", json: [])])
        #expect(dir.contents == ["m.blip2"], "only the finished file remains")

        let file = try ModelFile(path: path)
        #expect(file.formatVersion == 1)
        #expect(file.tensors.map(\.name) == ["a.bias", "b.weight", "c"])
        let b = try #require(file.tensor(named: "b.weight"))
        #expect(b.shape == [1000, 300] && b.type == .f32 && b.size == 1_200_000 && b.compression == compression)
        #expect(b.offset % ModelFileFormat.pageAlignment == 0)
        for record in file.tensors { #expect(record.offset % 64 == 0) }
        #expect(Array(try file.data(named: "a.bias").bindMemory(to: Float.self)) == small)
        #expect(Array(try file.data(named: "b.weight").bindMemory(to: Float.self)) == big)
        #expect(Array(try file.data(named: "c").bindMemory(to: UInt16.self)) == halves)
        #expect(file.verifyAll().isEmpty)
        #expect(file.section(named: "config")?.json == Array(#"{"x": 1}"#.utf8))
        #expect(file.section(named: "empty")?.json == [])
        if compression == .zstd { #expect(b.storedSize < b.size) } else { #expect(b.storedSize == b.size) }
    }

    @Test func uncompressedTensorsAreReadInPlace() throws {
        let dir = TemporaryDirectory()
        let path = dir.path("m.blip2")
        let writer = try ModelFileWriter(destination: path)
        try floatBytes([1, 2, 3, 4]).withUnsafeBytes { try writer.addTensor(name: "w", type: .f32, shape: [4], bytes: $0) }
        try writer.finish(metadata: [])
        let file = try ModelFile(path: path)
        let record = try #require(file.tensor(named: "w"))
        let data = try file.data(of: record)
        // Same address as the stored bytes: no copy was made.
        #expect(data.baseAddress == file.storedBytes(of: record).baseAddress)
    }

    @Test func writerRejectsInconsistentTensors() throws {
        let dir = TemporaryDirectory()
        let four = floatBytes([1, 2, 3, 4])
        let short = try ModelFileWriter(destination: dir.path("a.blip2"))
        #expect(throws: ModelFileError.self) { try four.withUnsafeBytes { try short.addTensor(name: "w", type: .f32, shape: [5], bytes: $0) } }
        #expect(throws: ModelFileError.self, "a failed writer refuses to finish") { try short.finish(metadata: []) }
        let long = try ModelFileWriter(destination: dir.path("b.blip2"))
        #expect(throws: ModelFileError.self) { try four.withUnsafeBytes { try long.addTensor(name: "w", type: .f32, shape: [3], bytes: $0) } }
        let writer = try ModelFileWriter(destination: dir.path("c.blip2"))
        #expect(throws: ModelFileError.self) { try writer.beginTensor(name: "q", type: .q8, shape: [2, 40]) }
        try four.withUnsafeBytes { _ = try writer.addTensor(name: "ok", type: .f32, shape: [4], bytes: $0) }
        #expect(throws: ModelFileError.self) { try four.withUnsafeBytes { try writer.addTensor(name: "ok", type: .f32, shape: [4], bytes: $0) } }
        short.abort()
        long.abort()
        writer.abort()
        #expect(dir.contents.isEmpty, "aborted writers leave nothing")
    }

    @Test func droppedWriterLeavesNothing() throws {
        let dir = TemporaryDirectory()
        do {
            let writer = try ModelFileWriter(destination: dir.path("m.blip2"))
            try floatBytes([1, 2]).withUnsafeBytes { _ = try writer.addTensor(name: "w", type: .f32, shape: [2], bytes: $0) }
        }
        #expect(dir.contents.isEmpty)
    }
}

/// The exact bytes of a tiny file, laid out by hand from docs/FORMAT.md.
@Suite struct GoldenLayoutTests {
    @Test func tinyFileMatchesTheSpecification() throws {
        let dir = TemporaryDirectory()
        let path = dir.path("tiny.blip2")
        let writer = try ModelFileWriter(destination: path)
        let values: [Float] = [1, -2]
        try floatBytes(values).withUnsafeBytes { _ = try writer.addTensor(name: "w", type: .f32, shape: [2], bytes: $0) }
        try writer.finish(metadata: [MetadataSection(name: "c", json: Array("{}".utf8))])
        let got = readBytes(path)

        var data = floatBytes(values)                                  // tensor at 128 (64-aligned)
        let dataCRC = crc32c(data)
        data += [UInt8](repeating: 0, count: 64 - data.count)           // pad to 192 for the directory
        var directory: [UInt8] = [1, 0, UInt8(ascii: "w"), 0 /* f32 */, 0 /* none */, 1 /* rank */, 0]
        directory += [1, 0, 0, 0]                                       // block elements
        directory += [2, 0, 0, 0, 0, 0, 0, 0]                           // dim 0
        directory += [128, 0, 0, 0, 0, 0, 0, 0]                         // offset
        directory += [8, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0]   // size, stored size
        directory += [UInt8(dataCRC & 0xff), UInt8(dataCRC >> 8 & 0xff), UInt8(dataCRC >> 16 & 0xff), UInt8(dataCRC >> 24)]
        let metadata: [UInt8] = [1, 0, 0, 0, 1, 0, UInt8(ascii: "c"), 2, 0, 0, 0, 0, 0, 0, 0, UInt8(ascii: "{"), UInt8(ascii: "}")]
        let directoryOffset = 192, metadataOffset = 192 + directory.count
        let fileSize = metadataOffset + metadata.count

        var header = Array("BLIP2EDG".utf8) + [UInt8](repeating: 0, count: 120)
        header.setU32(1, at: 8)
        header.setU32(128, at: 12)
        header.setU64(UInt64(fileSize), at: 16)
        header.setU64(128, at: 24)
        header.setU64(8, at: 32)                 // data region: the tensor bytes
        header.setU64(UInt64(directoryOffset), at: 40)
        header.setU64(UInt64(directory.count), at: 48)
        header.setU64(UInt64(metadataOffset), at: 56)
        header.setU64(UInt64(metadata.count), at: 64)
        header.setU32(1, at: 72)
        header.setU32(crc32c(directory), at: 76)
        header.setU32(crc32c(metadata), at: 80)
        header.setU32(16384, at: 84)
        header.setU32(crc32c(Array(header[0..<124])), at: 124)

        let expected = header + data + directory + metadata
        #expect(got.count == expected.count)
        #expect(got == expected)
    }

    /// A file written by format version 1 must stay readable by every later build.
    @Test func committedVersion1FileStillReads() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/format/tiny-v1.blip2")
        let file = try ModelFile(path: url.path)
        #expect(file.formatVersion == 1)
        #expect(file.tensors.map(\.name) == ["vision_model.post_layernorm.weight", "language_projection.weight"])
        let weight = try file.data(named: "language_projection.weight")
        #expect(weight.count == 2 * 34)   // two q8 blocks
        let norm = Array(try file.data(named: "vision_model.post_layernorm.weight").bindMemory(to: Float.self))
        #expect(norm == [1, 2, 3])
        #expect(file.verifyAll().isEmpty)
    }
}
