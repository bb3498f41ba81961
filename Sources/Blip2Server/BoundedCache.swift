import Foundation

// MARK: - A bounded, least-recently-used map with an optional time to live
//
// Chat sessions (each holding a KV cache) and encoded images are kept in memory between requests; both are
// bounded by count so that no sequence of requests grows the process, and sessions also expire.

// @unchecked Sendable: entries are behind its lock.
final class BoundedCache<Value>: @unchecked Sendable {
    private struct Entry {
        var value: Value
        var lastUsed: Double
        var tick: UInt64
    }

    let capacity: Int
    /// Seconds an entry lives after its last use; nil: until evicted.
    let timeToLive: Double?
    private let now: () -> Double
    private let lock = NSLock()
    private var entries: [String: Entry] = [:]
    private var tick: UInt64 = 0
    private(set) var evictions = 0

    init(capacity: Int, timeToLive: Double? = nil, now: @escaping () -> Double = { Date().timeIntervalSince1970 }) {
        precondition(capacity >= 1)
        self.capacity = capacity
        self.timeToLive = timeToLive
        self.now = now
    }

    var count: Int { lock.withLock { entries.count } }

    /// The value, refreshed as most recently used; nil if absent or expired (an expired entry is removed).
    func get(_ key: String) -> Value? {
        lock.withLock {
            let time = now()
            guard var entry = entries[key] else { return nil }
            if let timeToLive, time - entry.lastUsed > timeToLive {
                entries[key] = nil
                return nil
            }
            tick += 1
            entry.lastUsed = time
            entry.tick = tick
            entries[key] = entry
            return entry.value
        }
    }

    /// Stores `value`, first dropping expired entries, then the least recently used ones past the capacity.
    func put(_ key: String, _ value: Value) {
        lock.withLock {
            let time = now()
            tick += 1
            entries[key] = Entry(value: value, lastUsed: time, tick: tick)
            if let timeToLive {
                for (k, entry) in entries where time - entry.lastUsed > timeToLive {
                    entries[k] = nil
                    evictions += 1
                }
            }
            while entries.count > capacity, let oldest = entries.min(by: { $0.value.tick < $1.value.tick })?.key {
                entries[oldest] = nil
                evictions += 1
            }
        }
    }

    func remove(_ key: String) {
        lock.withLock { entries[key] = nil }
    }

    var keys: [String] { lock.withLock { entries.sorted { $0.value.tick < $1.value.tick }.map(\.key) } }
}
