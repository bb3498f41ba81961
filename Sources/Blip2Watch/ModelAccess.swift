import Blip2Pipeline
import Foundation

// MARK: - Who runs the model

/// Where the watcher's model work (preprocessing, the image encoding, the caption and the answers) runs.
/// `blip2 watch` runs it at once on the watch loop's thread; a server that shares its one model between
/// its requests and a camera runs it in one of its slots, beside the requests (the pipeline's scheduler
/// keeps the model's work one job at a time and shares the decode steps).
public protocol ModelAccess: Sendable {
    /// Runs `body` where the model may be used and returns its result. `body` is told whether other work
    /// ran first while it waited: its frame may then no longer be the newest.
    func withModel<T: Sendable>(_ body: @escaping @Sendable (_ waited: Bool) throws -> T) throws -> T
}

/// The model is the watcher's alone.
public struct DirectModelAccess: ModelAccess {
    public init() {}
    public func withModel<T: Sendable>(_ body: @escaping @Sendable (_ waited: Bool) throws -> T) throws -> T { try body(false) }
}
