import Foundation

// MARK: - Byte-keyed token lookup

/// Token bytes -> id, for the bulk lookups of loading (three per merge rule, 150k in all).
///
/// `[String: Int]` hashes a non-ASCII key by first normalizing it (Swift strings compare by
/// canonical equivalence), and almost every byte-level token is non-ASCII (`Ġthe`). Hashing raw
/// bytes is several times faster and also exact: two different byte sequences never collide into
/// one entry.
struct TokenTable {
    private var arena: [UInt8] = []
    private var starts: [Int32] = []
    private var ids: [Int32] = []
    private var slots: [Int32]  // index into starts/ids, or -1
    private let mask: Int

    init(_ vocab: [String: Int]) {
        var capacity = 16
        while capacity < vocab.count * 2 + 16 { capacity <<= 1 }
        slots = [Int32](repeating: -1, count: capacity)
        mask = capacity - 1
        arena.reserveCapacity(vocab.count * 8)
        starts.reserveCapacity(vocab.count + 1)
        ids.reserveCapacity(vocab.count)
        starts.append(0)
        for (token, id) in vocab {
            append(token, id: id)
        }
    }

    /// Adds an entry without looking for an existing one (the vocabulary's keys are distinct).
    private mutating func append(_ token: String, id: Int) {
        let entry = Int32(ids.count)
        let start = arena.count
        arena.append(contentsOf: token.utf8)
        starts.append(Int32(arena.count))
        ids.append(Int32(truncatingIfNeeded: id))
        let hash = arena.withUnsafeBufferPointer { TokenTable.hash(UnsafeBufferPointer(rebasing: $0[start...])) }
        var slot = hash & mask
        while slots[slot] >= 0 { slot = (slot + 1) & mask }
        slots[slot] = entry
    }

    /// Adds `token`, or gives an existing entry the new id. Only for a few added tokens: the table
    /// never grows its slots, so it must stay well below capacity.
    mutating func insert(_ token: String, id: Int) {
        if let entry = entry(of: token) {
            ids[entry] = Int32(truncatingIfNeeded: id)
        } else if ids.count < (mask + 1) / 2 {
            append(token, id: id)
        }
    }

    @inline(__always)
    private static func hash(_ bytes: UnsafeBufferPointer<UInt8>) -> Int {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in bytes {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
        }
        return Int(truncatingIfNeeded: hash ^ (hash >> 29))
    }

    /// The id of the token spelled by `bytes`, or nil.
    func id(of bytes: UnsafeBufferPointer<UInt8>) -> Int? {
        entry(of: bytes).map { Int(ids[$0]) }
    }

    private func entry(of token: String) -> Int? {
        var token = token
        return token.withUTF8 { entry(of: $0) }
    }

    private func entry(of bytes: UnsafeBufferPointer<UInt8>) -> Int? {
        var slot = TokenTable.hash(bytes) & mask
        return arena.withUnsafeBufferPointer { arena in
            slots.withUnsafeBufferPointer { slots in
                starts.withUnsafeBufferPointer { starts in
                    while true {
                        let entry = Int(slots[slot])
                        if entry < 0 { return nil }
                        let start = Int(starts[entry])
                        let end = Int(starts[entry + 1])
                        if end - start == bytes.count,
                           bytes.count == 0 || memcmp(arena.baseAddress! + start, bytes.baseAddress!, bytes.count) == 0 {
                            return entry
                        }
                        slot = (slot + 1) & mask
                    }
                }
            }
        }
    }

    func id(of token: String) -> Int? {
        var token = token
        return token.withUTF8 { id(of: $0) }
    }
}

/// One merge rule, resolved to ids.
struct MergeRule {
    var left: Int32
    var right: Int32
    var merged: Int32
}

extension TokenTable {
    /// Resolves "left right" rules to ids, refusing malformed lines and symbols the vocabulary lacks
    /// (`tokenizers` refuses them too: such a rule could never produce a token the model knows).
    func resolve(_ merges: [String]) throws -> [MergeRule] {
        var rules: [MergeRule] = []
        rules.reserveCapacity(merges.count)
        var joined: [UInt8] = []
        for (rank, merge) in merges.enumerated() {
            var text = merge
            let rule: MergeRule? = try text.withUTF8 { bytes -> MergeRule? in
                var space = -1
                for index in 0..<bytes.count where bytes[index] == UInt8(ascii: " ") {
                    guard space < 0 else { throw TokenizerError.badMergeLine(line: rank + 1, text: merge) }
                    space = index
                }
                guard space >= 0 else { throw TokenizerError.badMergeLine(line: rank + 1, text: merge) }
                let left = UnsafeBufferPointer(rebasing: bytes[..<space])
                let right = UnsafeBufferPointer(rebasing: bytes[(space + 1)...])
                joined.removeAll(keepingCapacity: true)
                joined.append(contentsOf: left)
                joined.append(contentsOf: right)
                guard let leftId = id(of: left) else {
                    throw TokenizerError.mergeSymbolNotInVocabulary(rank: rank, merge: merge, symbol: String(decoding: left, as: UTF8.self))
                }
                guard let rightId = id(of: right) else {
                    throw TokenizerError.mergeSymbolNotInVocabulary(rank: rank, merge: merge, symbol: String(decoding: right, as: UTF8.self))
                }
                guard let mergedId = joined.withUnsafeBufferPointer({ id(of: $0) }) else {
                    throw TokenizerError.mergeSymbolNotInVocabulary(rank: rank, merge: merge, symbol: String(decoding: joined, as: UTF8.self))
                }
                return MergeRule(left: Int32(leftId), right: Int32(rightId), merged: Int32(mergedId))
            }
            if let rule { rules.append(rule) }
        }
        return rules
    }
}
