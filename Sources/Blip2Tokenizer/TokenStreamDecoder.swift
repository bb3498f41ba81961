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
    private var stripper = StrippedDelivery()

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
        stripper.finish()
        return delivered
    }

    private mutating func deliver(_ text: String) -> String {
        stripWhitespace ? stripper.deliver(text) : text
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

/// Python's `.strip()` applied to text that arrives in pieces: leading whitespace is dropped, trailing whitespace
/// is held back until more text follows (and dropped at the end).
struct StrippedDelivery: Sendable {
    private var startedText = false
    private var heldWhitespace = ""

    mutating func deliver(_ text: String) -> String {
        guard !text.isEmpty else { return text }
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

    mutating func finish() {
        heldWhitespace = ""
    }
}

// MARK: - Streaming decode for any tokenizer

/// Turns generated ids into text as they arrive, for any `TextTokenizer` (T5's included), by decoding all ids
/// so far and handing out what was added.
///
/// A decoder's output for a prefix of the ids is a prefix of its output for all of them, except at the very end:
/// bytes that are not yet a whole character decode to U+FFFD until the next id completes them, and a run of
/// `<0xNN>` byte pieces is decoded as one (a run that turns out not to be UTF-8 becomes one U+FFFD per byte, its
/// ASCII bytes included). So the text of a trailing run of byte pieces, and trailing U+FFFD, are held back until
/// a later id or `finish()`. The concatenation of all returned pieces
/// plus `finish()` equals `tokenizer.decode(allIds, skipSpecialTokens:)`, or its `.strip()` with `stripWhitespace`.
/// Decoding everything again per id costs O(n²) in the answer's length, which for BLIP-2's answers (tens of
/// tokens, at most a few hundred) is far below one model step.
public struct TextStreamDecoder: Sendable {
    public let tokenizer: any TextTokenizer
    public let skipSpecialTokens: Bool
    public let stripWhitespace: Bool

    private var ids: [Int] = []
    /// Unicode scalars already handed out (before stripping).
    private var emitted = 0
    private var stripper = StrippedDelivery()

    public init(tokenizer: any TextTokenizer, skipSpecialTokens: Bool = true, stripWhitespace: Bool = false) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
        self.stripWhitespace = stripWhitespace
    }

    /// Feeds one generated id; returns the text that became final (often empty).
    public mutating func append(_ id: Int) -> String {
        ids.append(id)
        // Ids a decode drops (unknown, or special when skipping) do not end a run of byte pieces.
        var runStart = ids.count
        while runStart > 0 {
            let previous = ids[runStart - 1]
            guard let token = tokenizer.token(for: previous) else { runStart -= 1; continue }
            guard (skipSpecialTokens && tokenizer.isSpecial(previous)) || TokenDecoder.bytePiece(token) != nil else { break }
            runStart -= 1
        }
        let scalars = Array(tokenizer.decode(Array(ids[..<runStart]), skipSpecialTokens: skipSpecialTokens).unicodeScalars)
        var stable = scalars.count
        while stable > emitted, scalars[stable - 1] == "\u{FFFD}" { stable -= 1 }
        guard stable > emitted else { return "" }
        let text = String(String.UnicodeScalarView(scalars[emitted..<stable]))
        emitted = stable
        return deliver(text)
    }

    /// Ends the stream: whatever was held back, as a full decode gives it.
    public mutating func finish() -> String {
        let scalars = Array(tokenizer.decode(ids, skipSpecialTokens: skipSpecialTokens).unicodeScalars)
        let text = emitted < scalars.count ? String(String.UnicodeScalarView(scalars[emitted...])) : ""
        emitted = scalars.count
        let delivered = deliver(text)
        stripper.finish()
        return delivered
    }

    private mutating func deliver(_ text: String) -> String {
        stripWhitespace ? stripper.deliver(text) : text
    }
}
