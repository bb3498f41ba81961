import Blip2Core

// MARK: - Model file format, versions 1 to 3 (docs/FORMAT.md is the specification)
//
//   [header: 128 bytes] [data: tensors, aligned] [directory] [metadata sections]
//
// All integers are little-endian. The header is written last, so a file whose header checks out was
// finished; its fixed fields locate and checksum the other three regions.

public enum ModelFileFormat {
    public static let magic: [UInt8] = Array("BLIP2EDG".utf8)
    /// The newest version this build writes and reads.
    public static let version: UInt32 = 3
    /// The version a file holding tensors of these types needs: 2 added the panel types (q8p, q4p), 3 the
    /// super-block types (q4k, q3k, q6k). A file is written with the oldest version that holds its types, so
    /// older readers keep reading what they can.
    public static func version(for types: some Sequence<ElementType>) -> UInt32 {
        let superBlock: Set<ElementType> = [.q4k, .q3k, .q6k]
        var needed: UInt32 = 1
        for type in types {
            if superBlock.contains(type) { return 3 }
            if type.blockRows > 1 { needed = 2 }
        }
        return needed
    }
    public static let headerSize = 128
    /// Every tensor starts on a 64-byte boundary: a cache line, and the widest SIMD load.
    public static let tensorAlignment = 64
    /// Large tensors start on a 16 KiB boundary: a page on 4 KiB and 16 KiB kernels (Raspberry Pi 5),
    /// so `madvise` and huge-page promotion work per tensor.
    public static let pageAlignment = 16_384
    public static let largeTensorBytes = 1 << 20
    /// Readers accept any power of two from `tensorAlignment` up to this as the header's page_alignment.
    public static let maxPageAlignment = 1 << 20
    /// The tensors' run-time bytes may be at most `maxExpansion` times the file plus `expansionAllowance`
    /// (zstd files of real weights expand about 1.1 to 2 times; all-zero tensors far more, but they are small).
    public static let maxExpansion = 64
    public static let expansionAllowance = 64 << 20

    public static let maxNameBytes = 1024
    public static let maxRank = 8
    public static let maxTensors = 1 << 20
    public static let maxSections = 1024

    static func alignment(forTensorBytes bytes: Int) -> Int {
        bytes >= largeTensorBytes ? pageAlignment : tensorAlignment
    }
}

public enum TensorCompression: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case none = 0
    case zstd = 1
    public var description: String { self == .none ? "none" : "zstd" }
    public init?(name: String) {
        guard let match = Self.allCases.first(where: { $0.description == name }) else { return nil }
        self = match
    }
}

/// One row of the tensor directory.
public struct TensorRecord: Sendable, Equatable {
    /// The Hugging Face key, e.g. `language_model.model.decoder.layers.0.fc1.weight`.
    public var name: String
    public var type: ElementType
    /// The logical shape, as in the checkpoint ([out, in] for linear weights).
    public var shape: [Int]
    public var compression: TensorCompression
    /// Absolute file offset of the stored bytes.
    public var offset: Int
    /// Bytes at run time (after decompression).
    public var size: Int
    /// Bytes in the file.
    public var storedSize: Int
    /// CRC-32C of the stored bytes.
    public var checksum: UInt32

    public var elementCount: Int { Blip2Core.elementCount(shape) ?? 0 }
    public var storedRange: Range<Int> { offset..<(offset + storedSize) }
}

struct FileHeader: Equatable {
    var version: UInt32 = ModelFileFormat.version
    var fileSize = 0
    var dataOffset = 0
    var dataSize = 0
    var directoryOffset = 0
    var directorySize = 0
    var metadataOffset = 0
    var metadataSize = 0
    var tensorCount = 0
    var directoryChecksum: UInt32 = 0
    var metadataChecksum: UInt32 = 0
    var alignment = UInt32(ModelFileFormat.pageAlignment)

    func encoded() -> [UInt8] {
        var out = ByteWriter()
        out.bytes(ModelFileFormat.magic)
        out.u32(version)
        out.u32(UInt32(ModelFileFormat.headerSize))
        for value in [fileSize, dataOffset, dataSize, directoryOffset, directorySize, metadataOffset, metadataSize] {
            out.u64(UInt64(value))
        }
        out.u32(UInt32(tensorCount))
        out.u32(directoryChecksum)
        out.u32(metadataChecksum)
        out.u32(alignment)
        out.zeros(ModelFileFormat.headerSize - 4 - out.count)
        out.u32(crc32c(out.data))
        return out.data
    }
}

// MARK: - Little-endian byte helpers

struct ByteWriter {
    var data: [UInt8] = []
    var count: Int { data.count }
    mutating func bytes<S: Sequence>(_ s: S) where S.Element == UInt8 { data.append(contentsOf: s) }
    mutating func u8(_ v: UInt8) { data.append(v) }
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0) } }
    mutating func zeros(_ n: Int) { data.append(contentsOf: repeatElement(0, count: max(0, n))) }
}

/// A bounds-checked cursor: every read past the end throws instead of touching memory.
struct ByteReader {
    let buffer: UnsafeRawBufferPointer
    var position = 0
    let what: String

    init(_ buffer: UnsafeRawBufferPointer, what: String) {
        self.buffer = buffer
        self.what = what
    }

    var remaining: Int { buffer.count - position }

    private mutating func take(_ n: Int) throws -> Int {
        guard n >= 0, n <= remaining else { throw FormatViolation("\(what) ends early (needs \(n) more bytes at offset \(position), has \(remaining))") }
        defer { position += n }
        return position
    }
    mutating func u8() throws -> UInt8 { buffer[try take(1)] }
    mutating func u16() throws -> UInt16 { UInt16(littleEndian: buffer.loadUnaligned(fromByteOffset: try take(2), as: UInt16.self)) }
    mutating func u32() throws -> UInt32 { UInt32(littleEndian: buffer.loadUnaligned(fromByteOffset: try take(4), as: UInt32.self)) }
    mutating func u64() throws -> UInt64 { UInt64(littleEndian: buffer.loadUnaligned(fromByteOffset: try take(8), as: UInt64.self)) }
    /// A u64 that must also fit the platform's Int (offsets and sizes).
    mutating func size() throws -> Int {
        let value = try u64()
        guard value <= UInt64(Int.max / 2) else { throw FormatViolation("\(what) holds an impossible size \(value)") }
        return Int(value)
    }
    mutating func bytes(_ n: Int) throws -> UnsafeRawBufferPointer {
        let start = try take(n)
        return UnsafeRawBufferPointer(rebasing: buffer[start..<(start + n)])
    }
}

struct FormatViolation: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

// MARK: - Directory and metadata encodings

extension TensorRecord {
    func encode(into out: inout ByteWriter) {
        let nameBytes = Array(name.utf8)
        out.u16(UInt16(nameBytes.count))
        out.bytes(nameBytes)
        out.u8(UInt8(type.rawValue))
        out.u8(compression.rawValue)
        out.u8(UInt8(shape.count))
        out.u8(0)
        out.u32(UInt32(type.blockElements))
        for dim in shape { out.u64(UInt64(dim)) }
        out.u64(UInt64(offset))
        out.u64(UInt64(size))
        out.u64(UInt64(storedSize))
        out.u32(checksum)
    }

    static func decode(from reader: inout ByteReader) throws -> TensorRecord {
        let nameLength = Int(try reader.u16())
        guard nameLength > 0, nameLength <= ModelFileFormat.maxNameBytes else { throw FormatViolation("tensor name length \(nameLength) is out of range") }
        guard let name = String(validating: try reader.bytes(nameLength), as: UTF8.self) else {
            throw FormatViolation("a tensor name is not valid UTF-8")
        }
        let rawType = try reader.u8()
        guard let type = ElementType(rawValue: UInt32(rawType)) else {
            throw FormatViolation("tensor '\(name)' has unknown element type \(rawType) (written by a newer blip2-quantize?)")
        }
        let rawCompression = try reader.u8()
        guard let compression = TensorCompression(rawValue: rawCompression) else {
            throw FormatViolation("tensor '\(name)' has unknown compression \(rawCompression)")
        }
        let rank = Int(try reader.u8())
        guard rank <= ModelFileFormat.maxRank else { throw FormatViolation("tensor '\(name)' has rank \(rank) (at most \(ModelFileFormat.maxRank))") }
        guard try reader.u8() == 0 else { throw FormatViolation("tensor '\(name)' has a non-zero reserved byte") }
        let blockElements = Int(try reader.u32())
        guard blockElements == type.blockElements else {
            throw FormatViolation("tensor '\(name)': block size \(blockElements) does not match type \(type) (\(type.blockElements))")
        }
        var shape: [Int] = []
        for _ in 0..<rank { shape.append(try reader.size()) }
        let offset = try reader.size(), size = try reader.size(), storedSize = try reader.size()
        let checksum = try reader.u32()
        guard let expected = type.byteCount(shape: shape) else {
            throw FormatViolation("tensor '\(name)': shape \(shape) cannot be stored as \(type)")
        }
        guard size == expected else {
            throw FormatViolation("tensor '\(name)': \(size) bytes recorded, but shape \(shape) of \(type) needs \(expected)")
        }
        if compression == .none, storedSize != size {
            throw FormatViolation("tensor '\(name)': uncompressed but stored size \(storedSize) differs from size \(size)")
        }
        return TensorRecord(name: name, type: type, shape: shape, compression: compression, offset: offset,
                            size: size, storedSize: storedSize, checksum: checksum)
    }
}

/// A named JSON document in the metadata region.
public struct MetadataSection: Sendable, Equatable {
    public var name: String
    public var json: [UInt8]
    public init(name: String, json: [UInt8]) {
        self.name = name
        self.json = json
    }
}

enum MetadataCodec {
    static func encode(_ sections: [MetadataSection]) -> [UInt8] {
        var out = ByteWriter()
        out.u32(UInt32(sections.count))
        for section in sections {
            let name = Array(section.name.utf8)
            out.u16(UInt16(name.count))
            out.bytes(name)
            out.u64(UInt64(section.json.count))
            out.bytes(section.json)
        }
        return out.data
    }

    static func decode(_ buffer: UnsafeRawBufferPointer) throws -> [MetadataSection] {
        var reader = ByteReader(buffer, what: "metadata")
        let count = Int(try reader.u32())
        guard count <= ModelFileFormat.maxSections else { throw FormatViolation("metadata claims \(count) sections") }
        var sections: [MetadataSection] = []
        var seen = Set<String>()
        for _ in 0..<count {
            let nameLength = Int(try reader.u16())
            guard let name = String(validating: try reader.bytes(nameLength), as: UTF8.self), !name.isEmpty else {
                throw FormatViolation("a metadata section name is empty or not UTF-8")
            }
            guard seen.insert(name).inserted else { throw FormatViolation("metadata section '\(name)' appears twice") }
            let length = try reader.size()
            sections.append(MetadataSection(name: name, json: Array(try reader.bytes(length))))
        }
        guard reader.remaining == 0 else { throw FormatViolation("metadata has \(reader.remaining) trailing bytes") }
        return sections
    }
}
