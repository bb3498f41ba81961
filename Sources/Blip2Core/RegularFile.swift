import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Opening only regular files
//
// A path given on the command line or found in a checkpoint folder may name a FIFO (open() waits for a
// writer forever), a device (endless or blocking reads) or a directory. Every reader of models,
// checkpoints, configs and images opens with O_NONBLOCK, which never waits, and refuses anything fstat
// does not call a regular file before reading a byte.

public enum RegularFile {
    /// An open descriptor of a regular file and its size. The caller closes it.
    public static func openForReading(_ path: String) throws -> (descriptor: Int32, size: Int) {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        if fd < 0 {
            let code = errno
            if code == ENOENT { throw FileError(path: path, "no such file", kind: .missing) }
            throw FileError(path: path, "cannot open: \(String(cString: strerror(code)))")
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let message = String(cString: strerror(errno))
            close(fd)
            throw FileError(path: path, "cannot stat: \(message)")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw FileError(path: path, "it is \(kind(of: info.st_mode)), not a regular file", kind: .notRegular)
        }
        // Regular files ignore O_NONBLOCK for reads; clear it anyway so no reader meets EAGAIN.
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        return (fd, Int(info.st_size))
    }

    /// The whole file, refused without reading if it is larger than `maxBytes`.
    public static func contents(_ path: String, maxBytes: Int) throws -> Data {
        let (fd, size) = try openForReading(path)
        defer { close(fd) }
        guard size <= maxBytes else {
            throw FileError(path: path, "the file has \(size) bytes, over the limit of \(maxBytes)", kind: .tooLarge(bytes: size))
        }
        var data = Data(count: size)
        var done = 0
        let failure: String? = data.withUnsafeMutableBytes { buffer in
            while done < size {
                let n = read(fd, buffer.baseAddress! + done, size - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    return String(cString: strerror(errno))
                }
                if n == 0 { break }   // shrank while being read: keep what is there
                done += n
            }
            return nil
        }
        if let failure { throw FileError(path: path, "cannot read: \(failure)") }
        return done == size ? data : data.prefix(done)
    }

    /// Whether `path` exists at all (any kind of file), without opening it.
    public static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    static func kind(of mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: return "a directory"
        case S_IFIFO: return "a FIFO"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFSOCK: return "a socket"
        default: return "a special file"
        }
    }
}
