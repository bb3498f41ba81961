import Blip2Core
import CZstd
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A model file that cannot be read or written: the path and what is wrong with it.
public typealias ModelFileError = FileError

// MARK: - Writer
//
// Streams tensors into a temporary file beside the destination, then writes the directory, the
// metadata and finally the header, syncs, and renames. Until `finish` returns nothing exists at the
// destination; an error, an `abort()` or a dropped writer removes the temporary file.

public final class ModelFileWriter {
    public let destination: String
    public let temporaryPath: String
    private var fd: Int32
    private var position = 0
    private var records: [TensorRecord] = []
    private var names = Set<String>()
    private var finished = false
    private var openTensor = false
    /// Set when a tensor failed half-way: its bytes are in the file, so nothing more may be added.
    private var failed = false
    private var zstd: OpaquePointer?
    private var stagingBuffer: [UInt8] = []

    public init(destination: String) throws {
        self.destination = destination
        temporaryPath = Self.temporaryPath(for: destination)
        Self.removeStaleTemporaries(for: destination)
        fd = open(temporaryPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 {
            throw ModelFileError(path: destination, "cannot create \(temporaryPath): \(String(cString: strerror(errno)))")
        }
        // The header is rewritten last; zeros until then mean "unfinished" to any reader.
        try writeAll(Array(repeating: 0, count: ModelFileFormat.headerSize))
    }

    /// Where the file is written until it is complete: a hidden name in the destination's folder, so
    /// the final rename stays on one file system.
    public static func temporaryPath(for destination: String) -> String {
        let url = URL(fileURLWithPath: destination)
        return url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())").path
    }

    /// Removes what killed writers to `destination` left behind (a SIGKILL or a power cut skips every
    /// cleanup): files named like `temporaryPath(for:)` whose process no longer exists, that are regular
    /// files and start as only this writer's files do (a zero header, or the magic if it was finished).
    /// A live process's file, even another user's, is left alone.
    static func removeStaleTemporaries(for destination: String) {
        let url = URL(fileURLWithPath: destination)
        let folder = url.deletingLastPathComponent().path
        let prefix = ".\(url.lastPathComponent).tmp-"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else { return }
        for name in names where name.hasPrefix(prefix) {
            let digits = name.dropFirst(prefix.count)
            guard !digits.isEmpty, digits.allSatisfy({ ("0"..."9").contains($0) }), let pid = pid_t(digits), pid > 0, pid != getpid() else { continue }
            if kill(pid, 0) == 0 || errno != ESRCH { continue }
            let path = URL(fileURLWithPath: folder).appendingPathComponent(name).path
            guard let (fd, size) = try? RegularFile.openForReading(path) else { continue }
            var head = [UInt8](repeating: 0, count: ModelFileFormat.magic.count)
            let read = head.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            close(fd)
            guard size == 0 || (read == head.count && (head.allSatisfy { $0 == 0 } || head == ModelFileFormat.magic)) else { continue }
            unlink(path)
        }
    }

    deinit {
        if !finished { abort() }
        if let zstd { ZSTD_freeCCtx(zstd) }
    }

    /// Removes the temporary file; the destination is never touched.
    public func abort() {
        if fd >= 0 {
            close(fd)
            fd = -1
        }
        if !finished { unlink(temporaryPath) }
    }

    // MARK: Tensors

    /// Starts a tensor whose `size` bytes will follow through `TensorSink.write`.
    public func beginTensor(name: String, type: ElementType, shape: [Int],
                            compression: TensorCompression = .none, zstdLevel: Int32 = 3) throws -> TensorSink {
        guard !failed else { throw fail("an earlier tensor failed; this file cannot be finished") }
        guard !openTensor else { throw fail("tensor '\(name)' started before the previous one finished") }
        guard !name.isEmpty, name.utf8.count <= ModelFileFormat.maxNameBytes else { throw fail("tensor name '\(name)' is empty or too long") }
        guard names.insert(name).inserted else { throw fail("tensor '\(name)' written twice") }
        guard shape.count <= ModelFileFormat.maxRank else { throw fail("tensor '\(name)' has rank \(shape.count)") }
        guard let size = type.byteCount(shape: shape) else {
            throw fail("tensor '\(name)': shape \(shape) cannot be stored as \(type)")
        }
        try pad(to: ModelFileFormat.alignment(forTensorBytes: size))
        if compression == .zstd {
            if zstd == nil { zstd = ZSTD_createCCtx() }
            guard let zstd else { throw fail("cannot create a zstd context") }
            ZSTD_CCtx_reset(zstd, ZSTD_reset_session_and_parameters)
            try check(ZSTD_CCtx_setParameter(zstd, ZSTD_c_compressionLevel, zstdLevel), "zstd level \(zstdLevel)")
            try check(ZSTD_CCtx_setParameter(zstd, ZSTD_c_checksumFlag, 1), "zstd checksum flag")
            try check(ZSTD_CCtx_setPledgedSrcSize(zstd, UInt64(size)), "zstd pledged size")
        }
        openTensor = true
        let record = TensorRecord(name: name, type: type, shape: shape, compression: compression,
                                  offset: position, size: size, storedSize: 0, checksum: 0)
        return TensorSink(writer: self, record: record)
    }

    /// Writes a whole tensor at once.
    @discardableResult
    public func addTensor(name: String, type: ElementType, shape: [Int], bytes: UnsafeRawBufferPointer,
                          compression: TensorCompression = .none, zstdLevel: Int32 = 3) throws -> TensorRecord {
        let sink = try beginTensor(name: name, type: type, shape: shape, compression: compression, zstdLevel: zstdLevel)
        try sink.write(bytes)
        return try sink.finish()
    }

    fileprivate func append(_ bytes: UnsafeRawBufferPointer, to record: inout TensorRecord, received: Int) throws {
        guard received + bytes.count <= record.size else {
            failed = true
            throw fail("tensor '\(record.name)': more bytes than its shape \(record.shape) of \(record.type) holds")
        }
        switch record.compression {
        case .none:
            try writeAll(bytes)
            record.checksum = crc32c(bytes, continuing: record.checksum)
            record.storedSize += bytes.count
        case .zstd:
            try compress(bytes, end: false, into: &record)
        }
    }

    fileprivate func finishTensor(_ record: inout TensorRecord, received: Int) throws {
        guard received == record.size else {
            failed = true
            throw fail("tensor '\(record.name)': got \(received) bytes, its shape \(record.shape) of \(record.type) needs \(record.size)")
        }
        if record.compression == .zstd {
            try compress(UnsafeRawBufferPointer(start: nil, count: 0), end: true, into: &record)
        }
        openTensor = false
        records.append(record)
    }

    private func compress(_ input: UnsafeRawBufferPointer, end: Bool, into record: inout TensorRecord) throws {
        guard let zstd else { throw fail("zstd context missing") }
        let chunk = Int(ZSTD_CStreamOutSize())
        if stagingBuffer.count < chunk { stagingBuffer = Array(repeating: 0, count: chunk) }
        var inBuffer = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        while true {
            let (remaining, produced): (Int, Int) = try stagingBuffer.withUnsafeMutableBytes { out in
                var outBuffer = ZSTD_outBuffer(dst: out.baseAddress, size: out.count, pos: 0)
                let result = ZSTD_compressStream2(zstd, &outBuffer, &inBuffer, end ? ZSTD_e_end : ZSTD_e_continue)
                try check(result, "zstd compression of '\(record.name)'")
                return (result, outBuffer.pos)
            }
            if produced > 0 {
                try stagingBuffer.withUnsafeBytes { out in
                    let slice = UnsafeRawBufferPointer(rebasing: out[0..<produced])
                    try writeAll(slice)
                    record.checksum = crc32c(slice, continuing: record.checksum)
                }
                record.storedSize += produced
            }
            let inputDone = inBuffer.pos == inBuffer.size
            if end ? remaining == 0 : (inputDone && produced < chunk) { break }
        }
    }

    // MARK: Finish

    /// Writes directory, metadata and header, syncs, and renames onto the destination.
    public func finish(metadata: [MetadataSection]) throws {
        guard !failed else { throw fail("an earlier tensor failed; this file cannot be finished") }
        guard !openTensor else { throw fail("finish called while a tensor is still open") }
        var header = FileHeader()
        header.version = ModelFileFormat.version(for: records.map(\.type))
        header.dataOffset = ModelFileFormat.headerSize
        header.dataSize = position - ModelFileFormat.headerSize
        header.tensorCount = records.count

        try pad(to: ModelFileFormat.tensorAlignment)
        var directory = ByteWriter()
        for record in records { record.encode(into: &directory) }
        header.directoryOffset = position
        header.directorySize = directory.count
        header.directoryChecksum = crc32c(directory.data)
        try writeAll(directory.data)

        let metadataBytes = MetadataCodec.encode(metadata)
        header.metadataOffset = position
        header.metadataSize = metadataBytes.count
        header.metadataChecksum = crc32c(metadataBytes)
        try writeAll(metadataBytes)
        header.fileSize = position

        let headerBytes = header.encoded()
        let written = headerBytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        guard written == headerBytes.count else { throw fail("cannot write the header: \(String(cString: strerror(errno)))") }
        guard fsync(fd) == 0 else { throw fail("cannot sync: \(String(cString: strerror(errno)))") }
        close(fd)
        fd = -1
        guard rename(temporaryPath, destination) == 0 else {
            throw fail("cannot rename \(temporaryPath) to the destination: \(String(cString: strerror(errno)))")
        }
        finished = true
    }

    // MARK: I/O

    private func pad(to alignment: Int) throws {
        let padding = (alignment - position % alignment) % alignment
        if padding > 0 { try writeAll(Array(repeating: 0, count: padding)) }
    }

    private func writeAll(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try writeAll($0) }
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
        guard fd >= 0 else { throw fail("writer is closed") }
        var offset = 0
        while offset < bytes.count {
            let n = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                throw fail("write failed: \(String(cString: strerror(errno)))")
            }
            offset += n
        }
        position += bytes.count
    }

    private func check(_ code: Int, _ what: String) throws {
        if ZSTD_isError(code) != 0 { throw fail("\(what): \(String(cString: ZSTD_getErrorName(code)))") }
    }

    private func fail(_ message: String) -> ModelFileError { ModelFileError(path: destination, message) }
}

/// Receives one tensor's bytes in order; `finish` records it in the directory.
public final class TensorSink {
    private let writer: ModelFileWriter
    private var record: TensorRecord
    private var received = 0

    fileprivate init(writer: ModelFileWriter, record: TensorRecord) {
        self.writer = writer
        self.record = record
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        try writer.append(bytes, to: &record, received: received)
        received += bytes.count
    }

    @discardableResult
    public func finish() throws -> TensorRecord {
        try writer.finishTensor(&record, received: received)
        return record
    }
}
