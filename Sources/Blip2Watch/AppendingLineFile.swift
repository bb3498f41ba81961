import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A file that lines are appended to, each with one write as soon as it is made, so a reader (`tail -f`, a
/// log shipper) sees whole lines and a crash loses at most the line being written. A line that cannot be
/// written whole is cut back off the file. The file is created with the first line, so a run that fails
/// before it leaves nothing behind.
// @unchecked Sendable: writes are behind its lock.
public final class AppendingLineFile: @unchecked Sendable {
    public let path: String
    private var fd: Int32 = -1
    private let lock = NSLock()

    /// Checks that the file can be appended to (or created in its folder) without creating it.
    public init(path: String) throws {
        self.path = path
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard !isDirectory.boolValue else { throw FrameSourceError("\(path): is a folder, not a file") }
            guard access(path, W_OK) == 0 else { throw FrameSourceError("\(path): the file is not writable") }
        } else {
            let folder = (path as NSString).deletingLastPathComponent
            guard access(folder.isEmpty ? "." : folder, W_OK) == 0 else {
                throw FrameSourceError("\(path): cannot create the file (\(String(cString: strerror(errno))))")
            }
        }
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Appends `line` and a newline.
    public func append(_ line: String) throws {
        lock.lock()
        defer { lock.unlock() }
        if fd < 0 {
            fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw FrameSourceError("\(path): cannot open for appending (\(String(cString: strerror(errno))))") }
        }
        var info = stat()
        let sizeBefore = fstat(fd, &info) == 0 ? off_t(info.st_size) : -1
        let bytes = Array((line + "\n").utf8)
        var written = 0
        while written < bytes.count {
            let count = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, bytes.count - written) }
            if count < 0 {
                if errno == EINTR { continue }
                let reason = String(cString: strerror(errno))
                if written > 0, sizeBefore >= 0 { _ = ftruncate(fd, sizeBefore) }
                throw FrameSourceError("\(path): cannot append a line (\(reason))")
            }
            written += count
        }
    }
}
