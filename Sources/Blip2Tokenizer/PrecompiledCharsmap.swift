import Foundation

// MARK: - SentencePiece's precompiled normalization rules

/// The `Precompiled` normalizer of a SentencePiece `tokenizer.json`: the `precompiled_charsmap` that
/// SentencePiece compiles from its normalization rules (`nmt_nfkc` for T5), interpreted exactly as
/// `tokenizers` (spm_precompiled) interprets it.
///
/// The blob is `[u32 LE: trie byte count][trie: u32 LE units][replacement strings, each ending in NUL]`. The
/// trie is a Darts double array over UTF-8 bytes; a key's value is the byte offset of its replacement.
///
/// Normalizing, as `tokenizers` 0.23 does (a quirk it keeps for parity with the released models): the text is
/// cut into extended grapheme clusters; a cluster shorter than 6 bytes is first looked up whole, and the
/// *shortest* rule matching a prefix of it replaces the entire cluster (so `ﬁ` + U+0301 becomes `fi`);
/// otherwise each scalar is looked up alone and replaced, or kept.
struct PrecompiledCharsmap: Sendable {
    /// Double-array units.
    private let units: [UInt32]
    /// The replacement strings, NUL-separated.
    private let replacements: [UInt8]

    /// Parses the decoded blob, refusing one whose trie length runs past its end or whose strings are not UTF-8.
    init(blob: [UInt8]) throws {
        guard blob.count >= 4 else {
            throw TokenizerError.malformedJSON(name: "tokenizer.json", reason: "the Precompiled charsmap is shorter than its 4-byte header")
        }
        let trieBytes = Int(UInt32(blob[0]) | UInt32(blob[1]) << 8 | UInt32(blob[2]) << 16 | UInt32(blob[3]) << 24)
        let unitCount = trieBytes / 4
        guard unitCount >= 1, 4 + unitCount * 4 <= blob.count else {
            throw TokenizerError.malformedJSON(
                name: "tokenizer.json",
                reason: "the Precompiled charsmap declares a \(trieBytes)-byte trie but holds \(blob.count - 4) bytes after its header")
        }
        var units = [UInt32](repeating: 0, count: unitCount)
        for index in 0..<unitCount {
            let base = 4 + index * 4
            units[index] = UInt32(blob[base]) | UInt32(blob[base + 1]) << 8 | UInt32(blob[base + 2]) << 16 | UInt32(blob[base + 3]) << 24
        }
        let strings = Array(blob[(4 + unitCount * 4)...])
        guard String(validatingUTF8Bytes: strings) != nil else {
            throw TokenizerError.malformedJSON(name: "tokenizer.json", reason: "the Precompiled charsmap's replacement strings are not valid UTF-8")
        }
        self.units = units
        self.replacements = strings
    }

    // Darts unit fields.
    @inline(__always) private static func hasLeaf(_ unit: UInt32) -> Bool { (unit >> 8) & 1 == 1 }
    @inline(__always) private static func value(_ unit: UInt32) -> Int { Int(unit & ((1 << 31) - 1)) }
    @inline(__always) private static func label(_ unit: UInt32) -> UInt32 { unit & ((1 << 31) | 0xFF) }
    @inline(__always) private static func offset(_ unit: UInt32) -> Int { Int((unit >> 10) << ((unit & (1 << 9)) >> 6)) }

    /// The value of the shortest key that is a prefix of `key` (the reference takes the first result of its
    /// common-prefix search). A NUL byte ends the key. A hostile trie that points outside itself matches nothing.
    private func firstPrefixValue<Bytes: Collection>(_ key: Bytes) -> Int? where Bytes.Element == UInt8 {
        var position = Self.offset(units[0])
        for byte in key {
            if byte == 0 { return nil }
            position ^= Int(byte)
            guard position < units.count else { return nil }
            let unit = units[position]
            guard Self.label(unit) == UInt32(byte) else { return nil }
            position ^= Self.offset(unit)
            if Self.hasLeaf(unit) {
                guard position < units.count else { return nil }
                return Self.value(units[position])
            }
        }
        return nil
    }

    /// The replacement for `key`, if a rule matches one of its prefixes.
    private func transform<Bytes: Collection>(_ key: Bytes) -> ArraySlice<UInt8>? where Bytes.Element == UInt8 {
        guard let start = firstPrefixValue(key) else { return nil }
        guard start <= replacements.count else { return nil }
        var end = start
        while end < replacements.count, replacements[end] != 0 { end += 1 }
        return replacements[start..<end]
    }

    /// `text` normalized; `nil` when no rule applied (the text is unchanged).
    func normalize(_ text: Substring) -> String? {
        var output: [UInt8] = []
        var modified = false
        for cluster in text {
            let bytes = cluster.utf8
            if bytes.count < 6, let replacement = transform(bytes) {
                output.append(contentsOf: replacement)
                modified = true
                continue
            }
            for scalar in cluster.unicodeScalars {
                let scalarBytes = UTF8.bytes(of: scalar)
                if let replacement = transform(scalarBytes) {
                    output.append(contentsOf: replacement)
                    modified = true
                } else {
                    output.append(contentsOf: scalarBytes)
                }
            }
        }
        // A hostile blob may cut a replacement inside a character; the reference would refuse to build such
        // a string, so lossy decoding here only has to avoid a crash.
        return modified ? String(decoding: output, as: UTF8.self) : nil
    }
}

extension UTF8 {
    /// The UTF-8 bytes of one scalar.
    static func bytes(of scalar: Unicode.Scalar) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(4)
        UTF8.encode(scalar) { bytes.append($0) }
        return bytes
    }
}

extension String {
    /// The string these bytes spell, or nil when they are not valid UTF-8.
    init?(validatingUTF8Bytes bytes: [UInt8]) {
        let string = String(decoding: bytes, as: UTF8.self)
        guard string.utf8.elementsEqual(bytes) else { return nil }
        self = string
    }
}
