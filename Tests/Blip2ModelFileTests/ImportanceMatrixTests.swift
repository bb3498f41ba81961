import Foundation
import Testing
@testable import Blip2Core
@testable import Blip2ModelFile

/// The importance matrix file: a round trip, and every broken file refused with a message naming it.
@Suite struct ImportanceMatrixTests {
    static let sample = ImportanceMatrix(
        entries: [
            "vision_model.encoder.layers.0.mlp.fc1.weight": .init(values: [0, 0.5, 2.25, 1e-30], tokens: 257),
            "language_model.lm_head.weight": .init(values: [3, 1], tokens: 31),
        ],
        model: "demo-f32.blip2", images: 2, prompts: ["", "Question: what is it? Answer:"])

    /// Little-endian bytes of the fields, spelled out here rather than taken from the writer.
    static func handMade(count: UInt32, metadata: String, entries: [(name: String, columns: UInt32, tokens: UInt64, values: [Float])]) -> [UInt8] {
        var bytes = Array("BLIP2IMX".utf8)
        func u16(_ v: UInt16) { bytes += [UInt8(v & 0xff), UInt8(v >> 8)] }
        func u32(_ v: UInt32) { for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
        func u64(_ v: UInt64) { for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
        u32(1)
        u32(count)
        u32(UInt32(metadata.utf8.count))
        bytes += Array(metadata.utf8)
        for entry in entries {
            u16(UInt16(entry.name.utf8.count))
            bytes += Array(entry.name.utf8)
            u32(entry.columns)
            u64(entry.tokens)
            for value in entry.values { u32(value.bitPattern) }
        }
        u32(crc32c(bytes))
        return bytes
    }

    func expectError(_ bytes: [UInt8], containing needle: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let dir = TemporaryDirectory()
        let path = dir.path("bad.imatrix")
        writeBytes(bytes, path)
        do {
            let matrix = try ImportanceMatrix(contentsOf: path)
            Issue.record("read a broken file: \(matrix.entries.keys.sorted())", sourceLocation: sourceLocation)
        } catch {
            let message = "\(error)"
            #expect(message.contains(needle), "message: \(message)", sourceLocation: sourceLocation)
            #expect(message.contains(path), "the message names the file", sourceLocation: sourceLocation)
        }
    }

    @Test func roundTrip() throws {
        let dir = TemporaryDirectory()
        let path = dir.path("calibration.imatrix")
        try Self.sample.write(to: path)
        #expect(try ImportanceMatrix(contentsOf: path) == Self.sample)
        #expect(dir.contents == ["calibration.imatrix"], "no temporary file is left behind")
        // Entries in name order: the same matrix always gives the same bytes.
        #expect(readBytes(path) == (try Self.sample.encoded()))
    }

    @Test func readsTheDocumentedLayout() throws {
        let bytes = Self.handMade(count: 1, metadata: #"{"model": "m.blip2", "images": 3, "prompts": ["", "a"], "future": true}"#,
                                  entries: [("fc1.weight", 3, 12, [1, 0.25, 4])])
        let dir = TemporaryDirectory()
        writeBytes(bytes, dir.path("m.imatrix"))
        let matrix = try ImportanceMatrix(contentsOf: dir.path("m.imatrix"))
        #expect(matrix.entries == ["fc1.weight": .init(values: [1, 0.25, 4], tokens: 12)])
        #expect(matrix.source.model == "m.blip2" && matrix.source.images == 3 && matrix.source.prompts == ["", "a"])
    }

    @Test func notAnImportanceMatrix() throws {
        expectError([], containing: "not an importance matrix file")
        expectError(Array("BLIP2EDG model file bytes".utf8), containing: "not an importance matrix file")
        expectError(Array("BLIP2IMX".utf8) + [1, 0], containing: "ends early")
        let dir = TemporaryDirectory()
        #expect(throws: FileError.self) { try ImportanceMatrix(contentsOf: dir.path("missing.imatrix")) }
        #expect(throws: FileError.self) { try ImportanceMatrix(contentsOf: dir.url.path) }   // a directory
    }

    @Test func versionsOutsideTheKnownOnesAreRefused() throws {
        var bytes = try Self.sample.encoded()
        bytes.setU32(2, at: 8)
        expectError(bytes, containing: "format version 2")
        bytes.setU32(0, at: 8)
        expectError(bytes, containing: "version 0")
    }

    @Test func everyTruncationAndCorruptionIsCaught() throws {
        let bytes = try Self.sample.encoded()
        for length in Set([9, 12, 16, 20, 24, bytes.count / 2, bytes.count - 5, bytes.count - 1]) {
            expectError(Array(bytes[0..<length]), containing: length < 24 ? "ends early" : "checksum mismatch")
        }
        var flipped = bytes
        flipped[bytes.count / 2] ^= 0x10
        expectError(flipped, containing: "checksum mismatch")
        expectError(bytes + [0], containing: "checksum mismatch")
    }

    /// Structural lies behind a valid checksum: each is caught by its own check, before any allocation.
    @Test func hostileFieldsAreRefused() throws {
        let one: [(name: String, columns: UInt32, tokens: UInt64, values: [Float])] = [("w", 2, 5, [1, 2])]
        expectError(Self.handMade(count: 0xffff_ffff, metadata: "{}", entries: one), containing: "claims 4294967295 matrices")
        expectError(Self.handMade(count: 2, metadata: "{}", entries: one), containing: "ends early")
        expectError(Self.handMade(count: 0, metadata: "{}", entries: one), containing: "trailing data")
        expectError(Self.handMade(count: 1, metadata: "{not json", entries: one), containing: "not a valid JSON object")
        expectError(Self.handMade(count: 1, metadata: "[1]", entries: one), containing: "not a valid JSON object")
        expectError(Self.handMade(count: 1, metadata: "{}", entries: [("w", 0x7fff_ffff, 5, [1, 2])]), containing: "columns is out of range")
        expectError(Self.handMade(count: 1, metadata: "{}", entries: [("w", 0, 5, [])]), containing: "columns is out of range")
        expectError(Self.handMade(count: 1, metadata: "{}", entries: [("w", 3, 5, [1, 2])]), containing: "truncated: 'w' needs 12 bytes")
        expectError(Self.handMade(count: 1, metadata: "{}", entries: [("w", 2, 0, [1, 2])]), containing: "a token count of 0")
        expectError(Self.handMade(count: 1, metadata: "{}", entries: [("w", 2, 5, [1, -1])]), containing: "column 1 holds -1.0")
        expectError(Self.handMade(count: 1, metadata: "{}", entries: [("w", 2, 5, [.nan, 1])]), containing: "column 0 holds nan")
        expectError(Self.handMade(count: 1, metadata: "{}", entries: [("w", 2, 5, [.infinity, 1])]), containing: "column 0 holds inf")
        expectError(Self.handMade(count: 2, metadata: "{}", entries: one + one), containing: "'w' appears twice")
        expectError(Self.handMade(count: 1, metadata: "{}", entries: [("", 2, 5, [1, 2])]), containing: "name length 0")
        var badName = Self.handMade(count: 1, metadata: "{}", entries: one)
        badName[8 + 12 + 2 + 2] = 0xff   // the name's byte
        badName.setU32(crc32c(Array(badName[0..<(badName.count - 4)])), at: badName.count - 4)
        expectError(badName, containing: "not valid UTF-8")
    }

    @Test func writingRefusesWhatReadingWouldRefuse() throws {
        let dir = TemporaryDirectory()
        for entry in [ImportanceMatrix.Entry(values: [1], tokens: 0), .init(values: [], tokens: 3), .init(values: [.nan], tokens: 3)] {
            let path = dir.path("out.imatrix")
            #expect(throws: FileError.self) { try ImportanceMatrix(entries: ["w": entry]).write(to: path) }
            #expect(dir.contents.isEmpty, "nothing is left behind")
        }
        // A destination in a folder that does not exist: a clear error, nothing written.
        #expect(throws: FileError.self) { try Self.sample.write(to: dir.path("no/such/folder/out.imatrix")) }
    }

    @Test func checkAgainstTheModelsWeights() throws {
        let weights: [(name: String, columns: Int)] = [
            ("vision_model.encoder.layers.0.mlp.fc1.weight", 4), ("language_model.lm_head.weight", 2), ("unused.weight", 8),
        ]
        try Self.sample.check(against: weights, file: "cal.imatrix")

        do {
            try Self.sample.check(against: Array(weights.dropFirst()), file: "cal.imatrix")
            Issue.record("a matrix naming no weight passed")
        } catch {
            let message = "\(error)"
            #expect(message.contains("cal.imatrix") && message.contains("'vision_model.encoder.layers.0.mlp.fc1.weight' names no linear weight"), "\(message)")
            #expect(message.contains("demo-f32.blip2"), "names the model the matrix came from: \(message)")
        }
        do {
            try Self.sample.check(against: [("vision_model.encoder.layers.0.mlp.fc1.weight", 4), ("language_model.lm_head.weight", 3)], file: "cal.imatrix")
            Issue.record("a column count mismatch passed")
        } catch {
            let message = "\(error)"
            #expect(message.contains("cal.imatrix") && message.contains("'language_model.lm_head.weight' has 2 columns, but the weight has 3 inputs"), "\(message)")
        }
    }
}
