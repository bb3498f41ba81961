import Foundation

/// A one-place mailbox between a camera and a slower consumer: putting a value replaces the one held, so
/// the consumer always takes the newest and memory never holds more than one waiting value.
// @unchecked Sendable: the held value is behind its condition lock.
public final class LatestFrameSlot<Value>: @unchecked Sendable {
    private let condition = NSCondition()
    private var held: Value?
    private var ended = false
    private var cancelled = false

    public init() {}

    /// Holds `value`, replacing any value not taken yet. Returns whether one was replaced (and so dropped);
    /// after `cancel()` the value is refused and counts as dropped too.
    @discardableResult
    public func put(_ value: Value) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        if cancelled { return true }
        let replaced = held != nil
        held = value
        condition.broadcast()
        return replaced
    }

    /// Waits until `notBefore` (if given), then for a value, and takes it. Returns nil once the producer
    /// ended and nothing is held, or once cancelled. An ended producer's last value is not held back
    /// until `notBefore`.
    public func take(notBefore: Date? = nil) -> Value? {
        condition.lock()
        defer { condition.unlock() }
        if let notBefore {
            while !cancelled, !ended, Date() < notBefore { _ = condition.wait(until: notBefore) }
        }
        while !cancelled, held == nil, !ended { condition.wait() }
        if cancelled { return nil }
        defer {
            held = nil
            condition.broadcast()   // a producer in waitUntilEmpty() may put the next one
        }
        return held
    }

    /// For a producer that must not replace values (every frame of a recording): waits until the held
    /// value has been taken, or the slot is cancelled.
    public func waitUntilEmpty() {
        condition.lock()
        defer { condition.unlock() }
        while held != nil, !cancelled { condition.wait() }
    }

    /// The producer is done: the consumer takes what is held, then gets nil.
    public func end() {
        condition.lock()
        ended = true
        condition.broadcast()
        condition.unlock()
    }

    /// The consumer stops: waiting takes return nil, later puts are refused. Returns whether a value was
    /// held (and is now dropped).
    @discardableResult
    public func cancel() -> Bool {
        condition.lock()
        defer { condition.unlock() }
        cancelled = true
        let dropped = held != nil
        held = nil
        condition.broadcast()
        return dropped
    }

    /// Whether a value waits to be taken.
    public var isHolding: Bool {
        condition.lock()
        defer { condition.unlock() }
        return held != nil
    }

    public var isCancelled: Bool {
        condition.lock()
        defer { condition.unlock() }
        return cancelled
    }
}
