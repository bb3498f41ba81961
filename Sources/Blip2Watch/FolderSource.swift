import Blip2Core
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Decides which image files in a polled folder are new and finished. A file is taken once its size and
/// modification time are the same in two polls in a row (a writer that pauses longer than the poll
/// interval mid-file can still be caught half-way: time-lapse tools that write to a hidden or temporary
/// name and rename are always safe). A file rewritten in place is taken again. Files present when watching
/// starts are not taken unless they change. Memory follows what is in the folder, however long it runs.
public struct FolderScanner: Sendable {
    public struct Entry: Sendable, Equatable {
        public var name: String
        public var size: Int
        /// Modification time in nanoseconds.
        public var modified: Int64
        public init(name: String, size: Int, modified: Int64) {
            self.name = name
            self.size = size
            self.modified = modified
        }
    }

    /// Seen once, waiting to be seen unchanged.
    private var pending: [String: Entry] = [:]
    /// Taken (or there at the start), as they were then.
    private var taken: [String: Entry] = [:]

    /// `existing`: the folder's image files when watching starts; they are not taken.
    public init(existing: [Entry]) {
        for entry in existing { taken[entry.name] = entry }
    }

    /// One poll of the folder's image files; returns the names ready now, oldest first.
    public mutating func scan(_ entries: [Entry]) -> [String] {
        var ready: [Entry] = []
        var stillPending: [String: Entry] = [:]
        var stillPresent: [String: Entry] = [:]
        for entry in entries {
            if let before = taken[entry.name], before == entry {
                stillPresent[entry.name] = entry
            } else if let before = pending[entry.name], before == entry, entry.size > 0 {
                ready.append(entry)
                stillPresent[entry.name] = entry
            } else {
                stillPending[entry.name] = entry
            }
        }
        pending = stillPending
        taken = stillPresent
        ready.sort { ($0.modified, $0.name) < ($1.modified, $1.name) }
        return ready.map(\.name)
    }

    /// JPEG and PNG by extension; hidden files (being written by tools that rename when done) are skipped.
    public static func isImageName(_ name: String) -> Bool {
        guard !name.hasPrefix(".") else { return false }
        let lowered = name.lowercased()
        return [".jpg", ".jpeg", ".png"].contains { lowered.hasSuffix($0) }
    }
}

/// New JPEG and PNG files in a folder, polled.
public struct FolderSource: FrameSource {
    public let path: String
    public let limits: FrameLimits
    public var pollInterval: Double = 0.25
    public var name: String { path }

    public init(path: String, limits: FrameLimits = FrameLimits()) {
        self.path = path
        self.limits = limits
    }

    public func run(into sink: FrameSink) throws {
        var scanner = FolderScanner(existing: try list())
        sink.notice("watching \(path) for new JPEG and PNG files")
        while !sink.isCancelled {
            let resume = Date().addingTimeInterval(pollInterval)
            while !sink.isCancelled, Date() < resume {
                usleep(UInt32(min(pollInterval, Double(cancelCheckMilliseconds) / 1000) * 1_000_000))
            }
            if sink.isCancelled { return }
            for name in scanner.scan(try list()) {
                let file = (path as NSString).appendingPathComponent(name)
                do {
                    sink.deliver(try read(file), name: file)
                } catch let error as FrameSourceError {
                    sink.reject(error.message, name: file)
                } catch {
                    sink.reject("cannot read the file (\(error.localizedDescription))", name: file)
                }
            }
        }
    }

    /// The frame's bytes, opened without blocking and refused unless a regular file: the name may have
    /// been swapped for a FIFO since the poll's stat, and an open that waits for a writer would stall
    /// this source for good. Reads at most the size fstat gave, so a file that keeps growing is cut there.
    func read(_ file: String) throws -> Data {
        do { return try RegularFile.contents(file, maxBytes: limits.maxFileBytes) } catch let error as FileError {
            throw FrameSourceError(error.message)
        }
    }

    /// The folder's image files with their sizes and modification times.
    func list() throws -> [FolderScanner.Entry] {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: path) } catch {
            throw FrameSourceError("\(path): cannot list the folder (\(error.localizedDescription))")
        }
        var entries: [FolderScanner.Entry] = []
        for name in names where FolderScanner.isImageName(name) {
            var info = stat()
            guard stat((path as NSString).appendingPathComponent(name), &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { continue }
            #if canImport(Glibc)
            let modified = Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)
            #else
            let modified = Int64(info.st_mtimespec.tv_sec) * 1_000_000_000 + Int64(info.st_mtimespec.tv_nsec)
            #endif
            entries.append(FolderScanner.Entry(name: name, size: Int(info.st_size), modified: modified))
        }
        return entries
    }
}
