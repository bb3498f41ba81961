import Foundation
import Testing
@testable import Blip2Core
@testable import Blip2ModelFile

/// Every way a model file can be broken gets a clear error, never a crash or an out-of-bounds read.
@Suite struct ModelFileValidationTests {
    /// A small valid file: a compressed and an uncompressed tensor and one section.
    static func makeFile(in dir: TemporaryDirectory) throws -> [UInt8] {
        let path = dir.path("good.blip2")
        let writer = try ModelFileWriter(destination: path)
        try floatBytes((0..<64).map { Float($0) }).withUnsafeBytes { _ = try writer.addTensor(name: "plain", type: .f32, shape: [2, 32], bytes: $0) }
        try floatBytes((0..<256).map { Float($0 % 7) }).withUnsafeBytes { _ = try writer.addTensor(name: "packed", type: .f32, shape: [256], bytes: $0, compression: .zstd) }
        try writer.finish(metadata: [MetadataSection(name: "config", json: Array(#"{"a": [1, 2]}"#.utf8))])
        return readBytes(path)
    }

    func expectError(_ bytes: [UInt8], containing needle: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let dir = TemporaryDirectory()
        let path = dir.path("bad.blip2")
        writeBytes(bytes, path)
        do {
            let file = try ModelFile(path: path)
            Issue.record("opened a broken file: \(file.tensors.map(\.name))", sourceLocation: sourceLocation)
        } catch {
            let message = "\(error)"
            #expect(message.contains(needle), "message: \(message)", sourceLocation: sourceLocation)
            #expect(message.contains(path), "the message names the file", sourceLocation: sourceLocation)
        }
    }

    @Test func notAModelFile() throws {
        expectError([], containing: "not a blip2 model file")
        expectError(Array("hello world, this is text".utf8), containing: "not a blip2 model file")
        expectError(Array("BLIP2EDG".utf8) + [1, 0, 0], containing: "truncated")
        let dir = TemporaryDirectory()
        #expect(throws: ModelFileError.self) { try ModelFile(path: dir.path("missing.blip2")) }
        #expect(throws: ModelFileError.self) { try ModelFile(path: dir.url.path) }   // a directory
    }

    @Test func newerVersionIsRefusedByName() throws {
        let dir = TemporaryDirectory()
        var bytes = try Self.makeFile(in: dir)
        bytes.setU32(ModelFileFormat.version + 1, at: 8)
        bytes.refreshChecksums()
        expectError(bytes, containing: "format version \(ModelFileFormat.version + 1)")
        bytes.setU32(0, at: 8)
        bytes.refreshChecksums()
        expectError(bytes, containing: "version 0")
    }

    @Test func everyTruncationIsCaught() throws {
        let dir = TemporaryDirectory()
        let bytes = try Self.makeFile(in: dir)
        for length in Set([1, 8, 64, 127, 128, 129, bytes.count / 2, bytes.count - 20, bytes.count - 1]) {
            expectError(Array(bytes[0..<length]), containing: length < 8 ? "not a blip2 model file" : "truncated")
        }
        expectError(bytes + [0], containing: "trailing data")
    }

    @Test func corruptChecksumsAreCaught() throws {
        let dir = TemporaryDirectory()
        let good = try Self.makeFile(in: dir)
        var header = good
        header[30] ^= 0x40
        expectError(header, containing: "header checksum mismatch")
        let directoryOffset = Int(good.u64(at: 40)), metadataOffset = Int(good.u64(at: 56))
        var directory = good
        directory[directoryOffset + 3] ^= 1
        expectError(directory, containing: "directory checksum mismatch")
        var metadata = good
        metadata[metadataOffset + 12] ^= 1
        expectError(metadata, containing: "metadata checksum mismatch")
    }

    @Test func corruptTensorBytesFailVerification() throws {
        let dir = TemporaryDirectory()
        var bytes = try Self.makeFile(in: dir)
        bytes[128 + 5] ^= 0xff   // inside "plain": not covered by the structural checksums
        let path = dir.path("flipped.blip2")
        writeBytes(bytes, path)
        let file = try ModelFile(path: path)
        #expect(file.verifyAll().map(\.name) == ["plain"])
    }

    @Test func corruptCompressedTensorIsAnErrorNotACrash() throws {
        let dir = TemporaryDirectory()
        var bytes = try Self.makeFile(in: dir)
        let path = dir.path("m.blip2")
        writeBytes(bytes, path)
        let record = try #require(try ModelFile(path: path, options: .init(decompressAtOpen: false)).tensor(named: "packed"))
        for i in record.offset..<(record.offset + record.storedSize) where i % 3 == 0 { bytes[i] ^= 0x5a }
        expectError(bytes, containing: "packed")
    }

    /// Hostile directories: consistent checksums, impossible contents.
    @Test func hostileDirectoryEntries() throws {
        let dir = TemporaryDirectory()
        let good = try Self.makeFile(in: dir)
        let d = Int(good.u64(at: 40))
        // Entry layout: u16 name length, name ("plain": 5 bytes), type, compression, rank, reserved, u32 block,
        // dims..., offset, size, stored size, crc.
        let typeAt = d + 2 + 5, rankAt = typeAt + 2, dimsAt = typeAt + 8
        let offsetAt = dimsAt + 16, sizeAt = offsetAt + 8, storedAt = sizeAt + 8

        func hostile(_ edit: (inout [UInt8]) -> Void, _ needle: String, sourceLocation: SourceLocation = #_sourceLocation) {
            var bytes = good
            edit(&bytes)
            bytes.refreshChecksums()
            expectError(bytes, containing: needle, sourceLocation: sourceLocation)
        }
        hostile({ $0[typeAt] = 42 }, "unknown element type 42")
        hostile({ $0[typeAt + 1] = 9 }, "unknown compression")
        hostile({ $0[rankAt] = 200 }, "rank 200")
        hostile({ $0.setU64(UInt64(1 << 40), at: offsetAt) }, "outside the data region")
        hostile({ $0.setU64(UInt64.max, at: offsetAt) }, "impossible size")
        hostile({ $0.setU64(129, at: offsetAt) }, "64-byte boundary")
        hostile({ $0.setU64(999, at: sizeAt) }, "needs 256")
        hostile({ $0.setU64(3, at: dimsAt) }, "needs 384")
        hostile({ $0.setU64(1 << 40, at: dimsAt); $0.setU64(1 << 40, at: dimsAt + 8) }, "cannot be stored")
        hostile({ $0.setU64(300, at: storedAt) }, "stored size")
        hostile({ $0.setU32(UInt32($0.u32(at: 72)) + 5, at: 72) }, "ends early")
        hostile({ $0.setU32(1 << 30, at: 72) }, "tensors")
        hostile({ $0.setU64(UInt64($0.count), at: 40) }, "outside")
        hostile({ $0.setU64(64, at: 40) }, "outside")   // inside the header
        hostile({ $0.setU64($0.u64(at: 24) + 8, at: 40) }, "overlap")
        hostile({ $0[d] = 0 }, "name length 0")
    }

    @Test func overlappingTensorsAreRefused() throws {
        let dir = TemporaryDirectory()
        let path = dir.path("two.blip2")
        let writer = try ModelFileWriter(destination: path)
        try floatBytes([1, 2]).withUnsafeBytes { _ = try writer.addTensor(name: "a", type: .f32, shape: [2], bytes: $0) }
        try floatBytes([3, 4]).withUnsafeBytes { _ = try writer.addTensor(name: "b", type: .f32, shape: [2], bytes: $0) }
        try writer.finish(metadata: [])
        var bytes = readBytes(path)
        let d = Int(bytes.u64(at: 40))
        let secondEntry = d + (2 + 1 + 8 + 8 + 24 + 4)      // first entry: name "a", rank 1
        bytes.setU64(128, at: secondEntry + 2 + 1 + 8 + 8)  // b's offset := a's offset
        bytes.refreshChecksums()
        expectError(bytes, containing: "overlap")
    }

    /// Random byte flips never crash a reader. Where the flips leave the header, directory and metadata
    /// checksums stale, opening fails; where they touch only tensor bytes, `verifyAll` (`inspect --verify`)
    /// names exactly the tensors touched. Half the rounds refresh the structural checksums first, so the
    /// flips also reach the checks behind them.
    @Test func randomCorruptionIsCaughtOrHarmless() throws {
        let dir = TemporaryDirectory()
        let good = try Self.makeFile(in: dir)
        let reference = try ModelFile(path: dir.path("good.blip2"))
        let directory = Int(good.u64(at: 40))..<Int(good.u64(at: 40) + good.u64(at: 48))
        let metadata = Int(good.u64(at: 56))..<Int(good.u64(at: 56) + good.u64(at: 64))
        let structure = [0..<ModelFileFormat.headerSize, directory, metadata]
        var rng = UInt64(12345)
        let path = dir.path("fuzz.blip2")
        var staleStructure = 0, staleTensors = 0, refreshedTensors = 0
        for round in 0..<300 {
            var bytes = good
            for _ in 0..<(1 + round % 4) {
                rng = rng &* 6364136223846793005 &+ 1442695040888963407
                bytes[Int(rng >> 33) % bytes.count] ^= UInt8(truncatingIfNeeded: rng >> 20) | 1
            }
            let refreshed = round % 2 == 0
            if refreshed { bytes.refreshChecksums() }
            writeBytes(bytes, path)
            let changed = { (range: Range<Int>) in bytes[range] != good[range] }
            let touchedTensors = Set(reference.tensors.filter { changed($0.storedRange) }.map(\.name))
            let structureChanged = structure.contains(where: changed)

            let opened = try? ModelFile(path: path, options: .init(decompressAtOpen: false))
            if let file = opened {
                for record in file.tensors { _ = try? file.data(of: record) }
                let failures = Set(file.verifyAll().map(\.name))
                if file.tensors == reference.tensors {
                    #expect(failures == touchedTensors, "round \(round): verify flags \(failures), the flips touched \(touchedTensors)")
                    if !touchedTensors.isEmpty { if refreshed { refreshedTensors += 1 } else { staleTensors += 1 } }
                }
            }
            if !refreshed && structureChanged {
                #expect(opened == nil, "round \(round): a file with stale structural checksums was opened")
                staleStructure += 1
            }
        }
        #expect(staleStructure > 10 && staleTensors > 10 && refreshedTensors > 10,
                "each case occurs: \(staleStructure) stale structure, \(staleTensors) + \(refreshedTensors) tensor rounds")
    }
}

@Suite struct SafeTensorsValidationTests {
    static func file(header: String, data: [UInt8] = [], lengthOverride: UInt64? = nil) -> [UInt8] {
        let json = Array(header.utf8)
        let length = lengthOverride ?? UInt64(json.count)
        return (0..<8).map { UInt8(truncatingIfNeeded: length >> (8 * $0)) } + json + data
    }

    func expectError(_ bytes: [UInt8], containing needle: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let dir = TemporaryDirectory()
        let path = dir.path("x.safetensors")
        writeBytes(bytes, path)
        do {
            _ = try SafeTensorsFile(path: path)
            Issue.record("accepted a broken safetensors file", sourceLocation: sourceLocation)
        } catch {
            #expect("\(error)".contains(needle), "message: \(error)", sourceLocation: sourceLocation)
            #expect("\(error)".contains(path), sourceLocation: sourceLocation)
        }
    }

    @Test func readsAValidFile() throws {
        let dir = TemporaryDirectory()
        let path = dir.path("ok.safetensors")
        let header = #"{"__metadata__":{"format":"pt"},"b":{"dtype":"F16","shape":[2],"data_offsets":[8,12]},"a":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]}}"#
        writeBytes(Self.file(header: header, data: floatBytes([1.5, -2]) + [0x00, 0x3c, 0x00, 0xc0]), path)
        let file = try SafeTensorsFile(path: path)
        #expect(file.metadata == ["format": "pt"])
        #expect(file.entries.map(\.name) == ["a", "b"])
        let a = try #require(file.entry(named: "a"))
        #expect(a.shape == [1, 2] && a.dtype == .f32)
        #expect(Array(file.bytes(of: a).bindMemory(to: Float.self)) == [1.5, -2])
        #expect(file.entry(named: "b")?.dtype == .f16)
    }

    /// Structure no header has is refused before any JSON object is built, so a 16 MB header of
    /// `[0,0,...` cannot become half a gigabyte of objects.
    @Test func headerStructureIsCheckedFirst() {
        let entry = #"{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#
        let long = "[" + Array(repeating: "0", count: 65).joined(separator: ",") + "]"
        expectError(Self.file(header: #"{"a":"# + long + "}", data: [0, 0, 0, 0]), containing: "longer than 64 elements")
        expectError(Self.file(header: #"{"a":{"b":{"c":1}}}"#), containing: "nested deeper")
        expectError(Self.file(header: #"{"a":[[1]]}"#), containing: "nested deeper")
        expectError(Self.file(header: #"{"a":"# + entry + #","a":"# + entry + "}", data: [0, 0, 0, 0]), containing: "appears twice")
        expectError(Self.file(header: #"{"a":"# + entry + "} x", data: [0, 0, 0, 0]), containing: "follow the object")
        expectError(Self.file(header: #"{"a":"# + entry + ",}", data: [0, 0, 0, 0]), containing: "expected a key")
        expectError(Self.file(header: #"{"a\#u{01}":1}"#), containing: "control character")
        // A string as long as a member may be, ending the member: in the metadata and as a whole value.
        let longString = "\"" + String(repeating: "x", count: 1 << 20) + "\""
        expectError(Self.file(header: #"{"__metadata__":{"note":"# + longString + "}}"), containing: "a member longer than 1048576 bytes")
        expectError(Self.file(header: #"{"a":"# + longString + "}"), containing: "a member longer than 1048576 bytes")
        // Escapes and braces inside strings are not structure.
        let dir = TemporaryDirectory()
        let path = dir.path("ok.safetensors")
        writeBytes(Self.file(header: #"{"__metadata__":{"note":"{[\"}]"},"a\"b":"# + entry + "}  ", data: [0, 0, 0, 0]), path)
        do { #expect(try SafeTensorsFile(path: path).entries.map(\.name) == ["a\"b"]) } catch { Issue.record("\(error)") }
    }

    @Test func brokenFiles() {
        expectError([1, 2, 3], containing: "shorter than the 8-byte header")
        expectError(Self.file(header: "{}", lengthOverride: 200_000_000), containing: "exceeds the limit")
        expectError(Self.file(header: "{}", lengthOverride: 50), containing: "truncated")
        expectError(Self.file(header: "[1, 2]"), containing: "not a JSON object")
        expectError(Self.file(header: "{\"a\": "), containing: "not valid JSON")
        expectError(Self.file(header: #"{"a":{"dtype":"Q9","shape":[1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]), containing: "unknown dtype 'Q9'")
        expectError(Self.file(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]), containing: "byte length")
        expectError(Self.file(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: [0, 0]), containing: "outside")
        expectError(Self.file(header: #"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]), containing: "dimension")
        expectError(Self.file(header: #"{"a":{"dtype":"F32","shape":[true],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]), containing: "dimension")
        expectError(Self.file(header: #"{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]), containing: "dimension")
        expectError(Self.file(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#, data: [0, 0, 0, 0]), containing: "outside")
        expectError(Self.file(header: #"{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]), containing: "dimension")
        expectError(Self.file(header: #"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]), containing: "byte length")
        expectError(Self.file(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}"#, data: [UInt8](repeating: 0, count: 8)), containing: "overlap")
        expectError(Self.file(header: #"{"__metadata__":{"k":1}}"#), containing: "not a string")
    }
}
