// MARK: - Streaming decode

/// Turns generated ids into text as they arrive, never splitting a multi-byte character.
///
/// Bytes that could still be the start of a valid UTF-8 character are held back until the next id
/// completes (or breaks) them; everything before is emitted at once. The concatenation of all
/// returned pieces plus `finish()` equals `tokenizer.decode(allIds, skipSpecialTokens:)` exactly,
/// or, with `stripWhitespace`, `decodeStripped(allIds)` (leading whitespace is dropped, trailing
/// whitespace is held back until more text follows).
///
/// ```swift
/// var stream = TokenStreamDecoder(tokenizer: tokenizer, stripWhitespace: true)
/// for id in generatedIds { print(stream.append(id), terminator: "") }
/// print(stream.finish())
/// ```
public struct TokenStreamDecoder: Sendable {
    public let tokenizer: OPTTokenizer
    public let skipSpecialTokens: Bool
    public let stripWhitespace: Bool

    private var pending: [UInt8] = []
    private var startedText = false
    private var heldWhitespace = ""

    public init(tokenizer: OPTTokenizer, skipSpecialTokens: Bool = true, stripWhitespace: Bool = false) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
        self.stripWhitespace = stripWhitespace
    }

    /// Feeds one generated id; returns the text that became complete (often empty).
    public mutating func append(_ id: Int) -> String {
        guard tokenizer.appendBytes(of: id, skipSpecialTokens: skipSpecialTokens, to: &pending) else { return "" }
        let complete = pending.count - TokenStreamDecoder.incompleteTailLength(pending)
        guard complete > 0 else { return "" }
        let text = String(decoding: pending[..<complete], as: UTF8.self)
        pending.removeFirst(complete)
        return deliver(text)
    }

    /// Feeds several ids; returns the text that became complete.
    public mutating func append<Ids: Sequence>(contentsOf ids: Ids) -> String where Ids.Element == Int {
        var text = ""
        for id in ids { text += append(id) }
        return text
    }

    /// Ends the stream. Bytes that never became a character turn into U+FFFD, as in a full decode;
    /// with `stripWhitespace`, held-back trailing whitespace is dropped.
    public mutating func finish() -> String {
        let text = pending.isEmpty ? "" : String(decoding: pending, as: UTF8.self)
        pending.removeAll()
        let delivered = deliver(text)
        heldWhitespace = ""
        return delivered
    }

    private mutating func deliver(_ text: String) -> String {
        guard stripWhitespace, !text.isEmpty else { return text }
        let scalars = text.unicodeScalars
        var start = scalars.startIndex
        if !startedText {
            guard let first = scalars.firstIndex(where: { !OPTTokenizer.isPythonWhitespace($0) }) else { return "" }
            start = first
            startedText = true
        }
        guard let last = scalars.lastIndex(where: { !OPTTokenizer.isPythonWhitespace($0) }), last >= start else {
            heldWhitespace += String(scalars[start...])
            return ""
        }
        let afterLast = scalars.index(after: last)
        let output = heldWhitespace + String(scalars[start..<afterLast])
        heldWhitespace = String(scalars[afterLast...])
        return output
    }

    /// Length of the trailing bytes that are a proper prefix of a valid UTF-8 sequence (0 to 3).
    ///
    /// Only such a prefix can still change meaning; a lead byte always ends the sequence before it,
    /// so decoding the bytes before it now gives exactly what decoding everything later would.
    static func incompleteTailLength(_ bytes: [UInt8]) -> Int {
        let count = bytes.count
        var lead = count - 1
        var continuations = 0
        while lead >= 0, continuations < 3, bytes[lead] & 0xC0 == 0x80 {
            lead -= 1
            continuations += 1
        }
        guard lead >= 0 else { return 0 }
        let needed: Int
        switch bytes[lead] {
        case 0xC2...0xDF: needed = 2
        case 0xE0...0xEF: needed = 3
        case 0xF0...0xF4: needed = 4
        default: return 0
        }
        let have = count - lead
        guard have < needed else { return 0 }
        if have >= 2 {
            let second = bytes[lead + 1]
            let allowed: ClosedRange<UInt8>
            switch bytes[lead] {
            case 0xE0: allowed = 0xA0...0xBF
            case 0xED: allowed = 0x80...0x9F
            case 0xF0: allowed = 0x90...0xBF
            case 0xF4: allowed = 0x80...0x8F
            default: allowed = 0x80...0xBF
            }
            guard allowed.contains(second) else { return 0 }
        }
        return have
    }
}
