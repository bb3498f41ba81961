import Foundation

// MARK: - Where frames arrive

/// The sink sources deliver to: numbers frames, keeps the counts, holds the newest frame, and passes
/// events on one at a time.
// @unchecked Sendable: counts, the newest frame and the handler are behind its lock.
final class FrameIntake: FrameSink, @unchecked Sendable {
    let slot = LatestFrameSlot<Frame>()
    var handler: ((WatchEvent) -> Void)?
    /// `WatchOptions.everyFrame`: a frame waits for the one before it to be taken instead of replacing it.
    var waitsForRoom = false

    private let lock = NSLock()
    private var totals = WatchSummary()
    private var newest: Frame?
    private let emitLock = NSLock()
    private var lastWarning: UInt64 = 0
    private var unreported = 0

    /// Warnings about broken frames come at most this often (a stream of them would flood a log).
    static let warningInterval: UInt64 = 1_000_000_000

    var isCancelled: Bool { slot.isCancelled }

    var counts: WatchSummary {
        lock.lock()
        defer { lock.unlock() }
        return totals
    }

    var newestFrame: Frame? {
        lock.lock()
        defer { lock.unlock() }
        return newest
    }

    func deliver(_ data: Data, name: String?) {
        // Outside the lock: the consumer takes it to count what it captioned. There is one producer, so the
        // slot is still empty when this frame is put.
        if waitsForRoom { slot.waitUntilEmpty() }
        let arrival = DispatchTime.now().uptimeNanoseconds
        let date = Date()
        lock.lock()
        totals.framesSeen += 1
        let frame = Frame(number: totals.framesSeen, data: data, name: name ?? "frame \(totals.framesSeen)", arrival: arrival, arrivalDate: date,
                          file: name)
        newest = frame
        if slot.put(frame) { totals.framesDropped += 1 }
        lock.unlock()
    }

    func reject(_ reason: String, name: String?) {
        lock.lock()
        totals.framesSeen += 1
        let number = totals.framesSeen
        lock.unlock()
        invalid(name ?? "frame \(number)", reason: reason)
    }

    func notice(_ message: String) { emit(.notice(message)) }

    /// Counts an invalid frame and warns, at most once per `warningInterval`.
    func invalid(_ name: String, reason: String) {
        lock.lock()
        totals.framesInvalid += 1
        let total = totals.framesInvalid
        lock.unlock()
        emitLock.lock()
        defer { emitLock.unlock() }
        let now = DispatchTime.now().uptimeNanoseconds
        guard lastWarning == 0 || now - lastWarning >= Self.warningInterval else {
            unreported += 1
            return
        }
        let hidden = unreported > 0 ? ", \(unreported) since the last warning" : ""
        handler?(.warning("\(name) skipped: \(reason) (\(total) invalid so far\(hidden))"))
        lastWarning = now
        unreported = 0
    }

    func unchanged() {
        lock.lock()
        totals.framesUnchanged += 1
        lock.unlock()
    }

    /// A frame taken, then passed over for a newer one that arrived while it waited for a shared model.
    func superseded() {
        lock.lock()
        totals.framesDropped += 1
        lock.unlock()
    }

    /// Counts a captioned frame; returns the counts including it.
    func captioned() -> WatchSummary {
        lock.lock()
        defer { lock.unlock() }
        totals.framesCaptioned += 1
        return totals
    }

    /// Stops taking frames; a frame still held counts as dropped.
    func cancel() {
        lock.lock()
        if slot.cancel() { totals.framesDropped += 1 }
        lock.unlock()
    }

    func emit(_ event: WatchEvent) {
        emitLock.lock()
        defer { emitLock.unlock() }
        handler?(event)
    }
}
