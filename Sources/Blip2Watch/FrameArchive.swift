import Foundation

/// Keeps the newest captioned frames in a folder, as they arrived (the camera's own JPEG or PNG bytes),
/// named `frame-<UTC time>-<number>.<ext>` so that names sort by time across restarts. Past `limit` files
/// the oldest are removed: first those an earlier run left (by name), then this run's in the order saved,
/// never by the time in the name, which can run behind the names already there (a board without a
/// clock, before its first network time sync): the frame just saved is always kept.
// @unchecked Sendable: used only by the watch loop's thread (the watcher that holds it is shared, the archive is not touched elsewhere).
public final class FrameArchive: @unchecked Sendable {
    public let folder: String
    public let limit: Int
    /// Oldest first: an earlier run's by name, then this run's in save order.
    private var files: [String]
    private let formatter: DateFormatter

    static let prefix = "frame-"

    public init(folder: String, limit: Int) throws {
        precondition(limit >= 1, "the archive keeps at least one frame")
        self.folder = folder
        self.limit = limit
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw FrameSourceError("\(folder): not a folder") }
        } else {
            do { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) } catch {
                throw FrameSourceError("\(folder): cannot create the folder (\(error.localizedDescription))")
            }
        }
        guard access(folder, W_OK) == 0 else { throw FrameSourceError("\(folder): the folder is not writable") }
        let existing = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        files = existing.filter(Self.isArchiveName).sorted()
        formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss.SSS'Z'"
    }

    static func isArchiveName(_ name: String) -> Bool {
        name.hasPrefix(prefix) && (name.hasSuffix(".jpg") || name.hasSuffix(".png"))
    }

    /// Writes the frame (whole or not at all) and removes the oldest past the limit; returns its path.
    public func save(_ frame: Frame) throws -> String {
        let isPNG = frame.data.starts(with: [0x89, 0x50, 0x4E, 0x47])
        let name = "\(Self.prefix)\(formatter.string(from: frame.arrivalDate))-\(String(format: "%06d", frame.number)).\(isPNG ? "png" : "jpg")"
        let path = (folder as NSString).appendingPathComponent(name)
        do { try frame.data.write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw FrameSourceError("\(path): cannot save the frame (\(error.localizedDescription))")
        }
        // A name already listed was just overwritten: it is now the newest.
        files.removeAll { $0 == name }
        files.append(name)
        while files.count > limit {
            try? FileManager.default.removeItem(atPath: (folder as NSString).appendingPathComponent(files.removeFirst()))
        }
        return path
    }
}
