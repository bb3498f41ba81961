import Foundation

// MARK: - Merge table

/// (left id, right id) -> (rank, merged id), open addressing over packed 64-bit keys.
///
/// Swift's `Dictionary` hashes with SipHash; this table does one multiply per probe, which matters
/// because every BPE step looks up each neighbouring pair.
struct MergeTable: Sendable {
    private var keys: [UInt64]
    private var ranks: [Int32]
    private var mergedIds: [Int32]
    private let mask: Int
    private(set) var count = 0
    private static let empty = UInt64.max

    init(capacityFor expected: Int) {
        var capacity = 16
        while capacity < expected * 2 { capacity <<= 1 }
        keys = [UInt64](repeating: MergeTable.empty, count: capacity)
        ranks = [Int32](repeating: 0, count: capacity)
        mergedIds = [Int32](repeating: 0, count: capacity)
        mask = capacity - 1
    }

    @inline(__always)
    private static func key(_ left: Int32, _ right: Int32) -> UInt64 {
        (UInt64(UInt32(bitPattern: left)) << 32) | UInt64(UInt32(bitPattern: right))
    }

    @inline(__always)
    private func slot(for key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 40) & mask
    }

    /// A later rule for the same pair replaces the earlier one, as in `tokenizers`.
    mutating func insert(left: Int32, right: Int32, rank: Int32, merged: Int32) {
        let key = MergeTable.key(left, right)
        var index = slot(for: key)
        while keys[index] != MergeTable.empty && keys[index] != key {
            index = (index + 1) & mask
        }
        if keys[index] == MergeTable.empty { count += 1 }
        keys[index] = key
        ranks[index] = rank
        mergedIds[index] = merged
    }

    /// Returns (rank, merged id) or nil.
    @inline(__always)
    func lookup(_ left: Int32, _ right: Int32) -> (rank: Int32, merged: Int32)? {
        let key = MergeTable.key(left, right)
        return keys.withUnsafeBufferPointer { keys in
            var index = slot(for: key)
            while true {
                let found = keys[index]
                if found == key { return (ranks[index], mergedIds[index]) }
                if found == MergeTable.empty { return nil }
                index = (index + 1) & mask
            }
        }
    }
}

// MARK: - Merging one word

/// Buffers reused across words so the merge loop never allocates once warm.
struct BPEScratch {
    var symbols: [Int32] = []
    var previous: [Int32] = []
    var next: [Int32] = []
    var alive: [Bool] = []
    var heap: [HeapEntry] = []

    struct HeapEntry {
        var rank: Int32
        var position: Int32
        var merged: Int32

        @inline(__always)
        static func precedes(_ a: HeapEntry, _ b: HeapEntry) -> Bool {
            a.rank != b.rank ? a.rank < b.rank : a.position < b.position
        }
    }

    @inline(__always)
    mutating func push(_ entry: HeapEntry) {
        heap.append(entry)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) >> 1
            if !HeapEntry.precedes(heap[child], heap[parent]) { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    @inline(__always)
    mutating func pop() -> HeapEntry? {
        guard let last = heap.popLast() else { return nil }
        guard !heap.isEmpty else { return last }
        let top = heap[0]
        heap[0] = last
        var parent = 0
        let count = heap.count
        while true {
            let left = 2 * parent + 1
            if left >= count { break }
            var best = left
            if left + 1 < count, HeapEntry.precedes(heap[left + 1], heap[left]) { best = left + 1 }
            if !HeapEntry.precedes(heap[best], heap[parent]) { break }
            heap.swapAt(best, parent)
            parent = best
        }
        return top
    }
}

enum BytePairMerger {
    /// Merges `scratch.symbols` in place and leaves the surviving ids, in order, in `scratch.symbols`.
    ///
    /// This is the `tokenizers` BPE loop: a min-heap of candidate merges ordered by (rank, position);
    /// popping always applies the lowest-ranked pair, leftmost first. An entry is stale when its
    /// left symbol died or the pair at its position no longer merges into the same token. Comparing
    /// the merged id alone (as the reference does) is enough: the text a position spans only grows,
    /// so a changed pair can never spell the same token again.
    static func merge(_ scratch: inout BPEScratch, table: MergeTable) {
        let count = scratch.symbols.count
        guard count > 1 else { return }
        scratch.previous.removeAll(keepingCapacity: true)
        scratch.next.removeAll(keepingCapacity: true)
        scratch.alive.removeAll(keepingCapacity: true)
        scratch.heap.removeAll(keepingCapacity: true)
        for index in 0..<count {
            scratch.previous.append(Int32(index - 1))
            scratch.next.append(index + 1 < count ? Int32(index + 1) : -1)
            scratch.alive.append(true)
        }
        for index in 0..<(count - 1) {
            if let found = table.lookup(scratch.symbols[index], scratch.symbols[index + 1]) {
                scratch.push(.init(rank: found.rank, position: Int32(index), merged: found.merged))
            }
        }

        while let top = scratch.pop() {
            let position = Int(top.position)
            guard scratch.alive[position] else { continue }
            let right = Int(scratch.next[position])
            guard right >= 0 else { continue }
            guard let current = table.lookup(scratch.symbols[position], scratch.symbols[right]),
                  current.merged == top.merged else { continue }

            scratch.symbols[position] = top.merged
            scratch.alive[right] = false
            let afterRight = scratch.next[right]
            scratch.next[position] = afterRight
            if afterRight >= 0 { scratch.previous[Int(afterRight)] = Int32(position) }

            let before = Int(scratch.previous[position])
            if before >= 0, let found = table.lookup(scratch.symbols[before], top.merged) {
                scratch.push(.init(rank: found.rank, position: Int32(before), merged: found.merged))
            }
            if afterRight >= 0, let found = table.lookup(top.merged, scratch.symbols[Int(afterRight)]) {
                scratch.push(.init(rank: found.rank, position: Int32(position), merged: found.merged))
            }
        }

        var write = 0
        for index in 0..<count where scratch.alive[index] {
            scratch.symbols[write] = scratch.symbols[index]
            write += 1
        }
        scratch.symbols.removeLast(count - write)
    }
}

// MARK: - Word cache

/// Pre-token bytes -> merged ids, shared by all callers of one tokenizer.
///
/// Keys are raw bytes, never `String`: Swift compares strings by canonical equivalence, so `é` and
/// `e\u{301}` would share an entry although they tokenize differently. Entries live in two flat
/// arenas; when the cache is full it is simply emptied, which keeps it allocation-free afterwards.
// @unchecked Sendable: its arenas are behind its lock.
final class WordCache: @unchecked Sendable {
    private struct Slot {
        var hash: UInt64 = 0  // 0 marks an empty slot
        var keyStart: Int32 = 0
        var keyLength: Int32 = 0
        var valueStart: Int32 = 0
        var valueCount: Int32 = 0
    }

    /// Longer pre-tokens (long digit runs, long repeated punctuation) are rare and not worth keeping.
    static let maximumKeyLength = 64

    private let lock = NSLock()
    private var slots: [Slot]
    private let mask: Int
    private let maximumEntries: Int
    private var entries = 0
    private var keyBytes: [UInt8] = []
    private var values: [Int32] = []

    init(slotCount: Int = 1 << 15) {
        slots = [Slot](repeating: Slot(), count: slotCount)
        mask = slotCount - 1
        maximumEntries = slotCount / 2
        keyBytes.reserveCapacity(maximumEntries * 8)
        values.reserveCapacity(maximumEntries * 2)
    }

    /// FNV-1a; never returns 0.
    @inline(__always)
    static func hash(_ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for index in start..<end {
            hash = (hash ^ UInt64(bytes[index])) &* 0x0000_0100_0000_01B3
        }
        return hash | 1
    }

    /// Appends the cached ids for `bytes[start..<end]` to `output` and returns true, or returns false.
    func lookup(_ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int, hash: UInt64, into output: inout [Int]) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        let length = end - start
        var index = Int(truncatingIfNeeded: hash >> 17) & mask
        while true {
            let slot = slots[index]
            if slot.hash == 0 { return false }
            if slot.hash == hash, Int(slot.keyLength) == length, keyMatches(slot, bytes, start, length) {
                let valueStart = Int(slot.valueStart)
                for offset in 0..<Int(slot.valueCount) {
                    output.append(Int(values[valueStart + offset]))
                }
                return true
            }
            index = (index + 1) & mask
        }
    }

    @inline(__always)
    private func keyMatches(_ slot: Slot, _ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ length: Int) -> Bool {
        let keyStart = Int(slot.keyStart)
        for offset in 0..<length where keyBytes[keyStart + offset] != bytes[start + offset] {
            return false
        }
        return true
    }

    func insert(_ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int, hash: UInt64, ids: [Int32]) {
        lock.lock()
        defer { lock.unlock() }
        if entries >= maximumEntries {
            for index in slots.indices { slots[index] = Slot() }
            keyBytes.removeAll(keepingCapacity: true)
            values.removeAll(keepingCapacity: true)
            entries = 0
        }
        let length = end - start
        var index = Int(truncatingIfNeeded: hash >> 17) & mask
        while slots[index].hash != 0 {
            let slot = slots[index]
            if slot.hash == hash, Int(slot.keyLength) == length, keyMatches(slot, bytes, start, length) {
                return  // another thread got here first
            }
            index = (index + 1) & mask
        }
        let slot = Slot(
            hash: hash,
            keyStart: Int32(keyBytes.count),
            keyLength: Int32(length),
            valueStart: Int32(values.count),
            valueCount: Int32(ids.count)
        )
        keyBytes.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start..<end]))
        values.append(contentsOf: ids)
        slots[index] = slot
        entries += 1
    }
}
