import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public struct FileError: Error, CustomStringConvertible {
    /// What kind of failure, for callers that map it onto their own errors.
    public enum Kind: Sendable, Equatable {
        case missing, notRegular, tooLarge(bytes: Int), failed
    }
    public let path: String
    public let message: String
    public let kind: Kind
    public init(path: String, _ message: String, kind: Kind = .failed) {
        self.path = path
        self.message = message
        self.kind = kind
    }
    public var description: String { "\(path): \(message)" }
}

/// A read-only memory mapping of a whole file. Pages are shared with every other process mapping the
/// same file and are only read from disk when touched.
// @unchecked Sendable: a read-only mapping, never written after init.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let size: Int
    private let base: UnsafeMutableRawPointer?

    public init(path: String) throws {
        self.path = path
        let (fd, size) = try RegularFile.openForReading(path)
        defer { close(fd) }
        self.size = size
        if size == 0 {
            base = nil
            return
        }
        let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let mapped, mapped != MAP_FAILED else {
            throw FileError(path: path, "cannot map \(size) bytes: \(String(cString: strerror(errno)))")
        }
        base = mapped
    }

    deinit {
        if let base { munmap(base, size) }
    }

    /// The whole file. Valid while this object lives.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: size) }

    /// The bytes of `range`, or nil when it does not lie inside the file.
    public func slice(_ range: Range<Int>) -> UnsafeRawBufferPointer? {
        guard range.lowerBound >= 0, range.upperBound <= size else { return nil }
        guard let base else { return range.isEmpty ? UnsafeRawBufferPointer(start: nil, count: 0) : nil }
        return UnsafeRawBufferPointer(start: base + range.lowerBound, count: range.count)
    }

    /// Drops the resident pages of `range` from this process (they stay in the page cache): streaming
    /// readers call it after each tensor so memory stays flat across a file far larger than RAM.
    public func release(_ range: Range<Int>) { advise(range, MADV_DONTNEED) }

    private func advise(_ range: Range<Int>, _ advice: Int32) {
        guard let base, range.lowerBound >= 0, range.upperBound <= size, !range.isEmpty else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = range.lowerBound / page * page
        let end = min(size, (range.upperBound + page - 1) / page * page)
        _ = madvise(base + start, end - start, advice)
    }
}
