import Blip2Pipeline
import Foundation

// MARK: - Who runs the model

/// Where the watcher's model work (preprocessing, the image encoding, the caption and the answers) runs.
/// `blip2 watch` runs it at once on the watch loop's thread; a server that shares its one model between
/// its requests and a camera runs it on its model thread, in turn with the requests.
public protocol ModelAccess: Sendable {
    /// Runs `body` with the model to itself and returns its result. `body` is told whether other work ran
    /// first while it waited: its frame may then no longer be the newest.
    func withModel<T: Sendable>(_ body: @escaping @Sendable (_ waited: Bool) throws -> T) throws -> T
}

/// The model is the watcher's alone.
public struct DirectModelAccess: ModelAccess {
    public init() {}
    public func withModel<T: Sendable>(_ body: @escaping @Sendable (_ waited: Bool) throws -> T) throws -> T { try body(false) }
}
