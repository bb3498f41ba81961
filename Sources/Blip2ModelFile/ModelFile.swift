import Blip2Core
import CZstd
import Foundation

// MARK: - Reader
//
// Maps the file, validates the header, directory and metadata against the file's size, and hands out
// tensor bytes straight from the mapping. zstd tensors are decompressed into owned, 64-byte aligned
// buffers: once at open (the default, for running) or on first use (for inspecting).

// @unchecked Sendable: the mapping is read-only; tensors decompressed on first use are made behind its lock.
public final class ModelFile: @unchecked Sendable {
    public struct Options: Sendable {
        /// Decompress every zstd tensor while opening (what the runtime wants: no surprises later).
        public var decompressAtOpen = true
        public init(decompressAtOpen: Bool = true) {
            self.decompressAtOpen = decompressAtOpen
        }
    }

    public let path: String
    public let formatVersion: UInt32
    public let fileSize: Int
    public let tensors: [TensorRecord]
    public let sections: [MetadataSection]
    private let file: MappedFile
    private let index: [String: Int]
    private var decompressed: [Int: UnsafeMutableRawBufferPointer] = [:]
    private let lock = NSLock()

    public init(path: String, options: Options = Options()) throws {
        self.path = path
        do { file = try MappedFile(path: path) } catch let error as FileError {
            throw ModelFileError(path: path, error.message)
        }
        let fail = { (message: String) in ModelFileError(path: path, message) }
        let bytes = file.bytes
        fileSize = bytes.count
        guard bytes.count >= ModelFileFormat.magic.count,
              Array(bytes[0..<ModelFileFormat.magic.count]) == ModelFileFormat.magic else {
            throw fail("not a blip2 model file (no BLIP2EDG magic); convert a checkpoint with blip2-quantize")
        }
        guard bytes.count >= ModelFileFormat.headerSize else {
            throw fail("truncated: \(bytes.count) bytes is smaller than the \(ModelFileFormat.headerSize)-byte header")
        }
        var header = ByteReader(UnsafeRawBufferPointer(rebasing: bytes[0..<ModelFileFormat.headerSize]), what: "header")
        do {
            _ = try header.bytes(ModelFileFormat.magic.count)
            formatVersion = try header.u32()
            if formatVersion > ModelFileFormat.version {
                throw fail("written in model file format version \(formatVersion), but this build reads versions up to \(ModelFileFormat.version); update blip2")
            }
            guard formatVersion >= 1 else { throw fail("format version 0 is invalid (unfinished or corrupt file)") }
            let headerSize = Int(try header.u32())
            guard headerSize == ModelFileFormat.headerSize else { throw fail("header size \(headerSize) is not \(ModelFileFormat.headerSize)") }
            let storedChecksum = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: headerSize - 4, as: UInt32.self))
            guard crc32c(UnsafeRawBufferPointer(rebasing: bytes[0..<(headerSize - 4)])) == storedChecksum else {
                throw fail("header checksum mismatch: the file is corrupt")
            }
            let recordedSize = try header.size()
            guard recordedSize == bytes.count else {
                throw fail(recordedSize > bytes.count
                    ? "truncated: the header says \(recordedSize) bytes, the file has \(bytes.count)"
                    : "the header says \(recordedSize) bytes but the file has \(bytes.count): trailing data")
            }
            let dataRange = try Self.region(&header, "data", fileSize: bytes.count)
            let directoryRange = try Self.region(&header, "directory", fileSize: bytes.count)
            let metadataRange = try Self.region(&header, "metadata", fileSize: bytes.count)
            let tensorCount = Int(try header.u32())
            let directoryChecksum = try header.u32()
            let metadataChecksum = try header.u32()
            let pageAlignment = Int(try header.u32())
            guard pageAlignment >= ModelFileFormat.tensorAlignment, pageAlignment <= ModelFileFormat.maxPageAlignment,
                  pageAlignment & (pageAlignment - 1) == 0 else {
                throw fail("header page_alignment \(pageAlignment) is not a power of two from \(ModelFileFormat.tensorAlignment) to \(ModelFileFormat.maxPageAlignment)")
            }
            guard try header.bytes(ModelFileFormat.headerSize - 4 - header.position).allSatisfy({ $0 == 0 }) else {
                throw fail("header reserved bytes are not zero (written by a newer blip2-quantize, or corrupt)")
            }
            guard tensorCount <= ModelFileFormat.maxTensors else { throw fail("header claims \(tensorCount) tensors") }
            for (a, b) in [(dataRange, directoryRange), (dataRange, metadataRange), (directoryRange, metadataRange)] where a.overlaps(b) {
                throw fail("header regions overlap: the file is corrupt")
            }

            let directoryBytes = file.slice(directoryRange)!
            guard crc32c(directoryBytes) == directoryChecksum else { throw fail("tensor directory checksum mismatch: the file is corrupt") }
            var reader = ByteReader(directoryBytes, what: "tensor directory")
            var records: [TensorRecord] = []
            records.reserveCapacity(tensorCount)
            for _ in 0..<tensorCount {
                let record = try TensorRecord.decode(from: &reader)
                guard record.offset % ModelFileFormat.tensorAlignment == 0 else {
                    throw fail("tensor '\(record.name)' starts at \(record.offset), not on a \(ModelFileFormat.tensorAlignment)-byte boundary")
                }
                guard record.offset >= dataRange.lowerBound, record.storedSize <= dataRange.upperBound - record.offset else {
                    throw fail("tensor '\(record.name)' (\(record.storedSize) bytes at \(record.offset)) lies outside the data region")
                }
                records.append(record)
            }
            guard reader.remaining == 0 else { throw fail("tensor directory has \(reader.remaining) trailing bytes") }
            // A zstd frame of a few kilobytes can declare gigabytes of zeros: bound what decompression may
            // allocate by what the file could plausibly hold (real weights compress less than 2x).
            let runtimeBytes = records.reduce(0) { total, record in
                let (sum, overflow) = total.addingReportingOverflow(record.size)
                return overflow ? Int.max : sum
            }
            let runtimeLimit = bytes.count > (Int.max - ModelFileFormat.expansionAllowance) / ModelFileFormat.maxExpansion
                ? Int.max : bytes.count * ModelFileFormat.maxExpansion + ModelFileFormat.expansionAllowance
            guard runtimeBytes <= runtimeLimit else {
                throw fail("the directory declares \(runtimeBytes) bytes of tensors, more than a \(bytes.count)-byte file can expand to")
            }
            var seen = Set<String>()
            for record in records where !seen.insert(record.name).inserted {
                throw fail("tensor '\(record.name)' appears twice in the directory")
            }
            let ordered = records.sorted { $0.offset < $1.offset }
            for (a, b) in zip(ordered, ordered.dropFirst()) where a.storedRange.upperBound > b.offset {
                throw fail("tensors '\(a.name)' and '\(b.name)' overlap")
            }

            let metadataBytes = file.slice(metadataRange)!
            guard crc32c(metadataBytes) == metadataChecksum else { throw fail("metadata checksum mismatch: the file is corrupt") }
            sections = try MetadataCodec.decode(metadataBytes)
            tensors = records
            index = Dictionary(uniqueKeysWithValues: records.enumerated().map { ($1.name, $0) })
        } catch let violation as FormatViolation {
            throw fail("corrupt model file: \(violation.message)")
        }
        if options.decompressAtOpen {
            for record in tensors where record.compression != .none { _ = try data(of: record) }
        }
    }

    deinit {
        for buffer in decompressed.values { buffer.deallocate() }
    }

    private static func region(_ header: inout ByteReader, _ what: String, fileSize: Int) throws -> Range<Int> {
        let offset = try header.size(), size = try header.size()
        guard offset >= ModelFileFormat.headerSize, size <= fileSize, offset <= fileSize - size else {
            throw FormatViolation("\(what) region (\(size) bytes at \(offset)) lies outside the \(fileSize)-byte file")
        }
        return offset..<(offset + size)
    }

    // MARK: Tensors

    public func tensor(named name: String) -> TensorRecord? { index[name].map { tensors[$0] } }

    /// The bytes as stored in the file (compressed or not), straight from the mapping.
    public func storedBytes(of record: TensorRecord) -> UnsafeRawBufferPointer {
        file.slice(record.storedRange)!   // validated at open
    }

    /// The tensor's bytes at run time: in place from the mapping when uncompressed.
    public func data(of record: TensorRecord) throws -> UnsafeRawBufferPointer {
        if record.compression == .none { return storedBytes(of: record) }
        guard let position = index[record.name] else { throw ModelFileError(path: path, "no tensor '\(record.name)'") }
        lock.lock()
        defer { lock.unlock() }
        if let buffer = decompressed[position] { return UnsafeRawBufferPointer(buffer) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(record.size, 1), alignment: ModelFileFormat.tensorAlignment)
        do {
            try decompress(record, into: buffer)
        } catch {
            buffer.deallocate()
            throw error
        }
        decompressed[position] = buffer
        // The compressed pages are never read again: without this the process holds both copies
        // (a zstd file's peak RSS was twice its decompressed size). Neighbouring pages that share a
        // boundary just fault back in from the page cache.
        file.release(record.storedRange)
        return UnsafeRawBufferPointer(rebasing: buffer[0..<record.size])
    }

    public func data(named name: String) throws -> UnsafeRawBufferPointer {
        guard let record = tensor(named: name) else { throw ModelFileError(path: path, "the model file has no tensor '\(name)'") }
        return try data(of: record)
    }

    private func decompress(_ record: TensorRecord, into buffer: UnsafeMutableRawBufferPointer) throws {
        let stored = storedBytes(of: record)
        let fail = { (message: String) in ModelFileError(path: self.path, "tensor '\(record.name)': \(message)") }
        let contentSize = ZSTD_getFrameContentSize(stored.baseAddress, stored.count)
        guard contentSize == UInt64(record.size) else {
            throw fail("zstd frame declares \(contentSize == ZSTD_CONTENTSIZE_ERROR ? "an invalid header" : "\(contentSize) bytes"), the directory \(record.size)")
        }
        let result = ZSTD_decompress(buffer.baseAddress, buffer.count, stored.baseAddress, stored.count)
        if ZSTD_isError(result) != 0 { throw fail("zstd: \(String(cString: ZSTD_getErrorName(result)))") }
        guard result == record.size else { throw fail("zstd produced \(result) bytes, expected \(record.size)") }
    }

    // MARK: Checksums

    /// Whether the stored bytes still match the directory's CRC-32C.
    public func verify(_ record: TensorRecord) -> Bool {
        crc32c(storedBytes(of: record)) == record.checksum
    }

    /// Tensors whose stored bytes do not match their checksum.
    public func verifyAll(progress: ((Int, Int) -> Void)? = nil) -> [TensorRecord] {
        var failures: [TensorRecord] = []
        let total = tensors.reduce(0) { $0 + $1.storedSize }
        var done = 0
        for record in tensors {
            if !verify(record) { failures.append(record) }
            file.release(record.storedRange)
            done += record.storedSize
            progress?(done, total)
        }
        return failures
    }

    // MARK: Metadata

    public func section(named name: String) -> MetadataSection? { sections.first { $0.name == name } }

    /// Decodes a metadata section (snake_case JSON keys are the caller's `CodingKeys`' business).
    public func decode<T: Decodable>(_ type: T.Type, section name: String) throws -> T {
        guard let section = section(named: name) else {
            throw ModelFileError(path: path, "metadata section '\(name)' is missing; re-convert with this version of blip2-quantize")
        }
        do {
            return try JSONDecoder().decode(T.self, from: Data(section.json))
        } catch {
            throw ModelFileError(path: path, "metadata section '\(name)' is invalid: \(error)")
        }
    }
}
