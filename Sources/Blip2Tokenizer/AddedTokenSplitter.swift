// MARK: - Splitting text on added tokens

/// Finds added tokens typed in text before BPE, with the semantics of `tokenizers`' AddedVocabulary:
/// leftmost-longest matching; `single_word` tokens only between non-word characters; `lstrip` and
/// `rstrip` swallow the whitespace next to the token. Tokens with `normalized == false` are matched
/// first on the whole text, then tokens with `normalized == true` on the pieces in between (OPT has
/// no normalizer, so the order of the two passes is the only difference).
struct AddedTokenSplitter: Sendable {
    struct Pattern: Sendable {
        var bytes: [UInt8]
        var id: Int
        var singleWord: Bool
        var lstrip: Bool
        var rstrip: Bool
    }

    /// A piece of the input: either an added token's id, or a byte range still to be tokenized.
    enum Piece: Equatable {
        case token(Int)
        case text(Range<Int>)
    }

    /// Patterns grouped by first byte, longest first, for each of the two passes.
    private let rawPatterns: [[Pattern]]
    private let normalizedPatterns: [[Pattern]]
    let isEmpty: Bool

    init(tokens: [AddedToken]) {
        var raw = [[Pattern]](repeating: [], count: 256)
        var normalized = [[Pattern]](repeating: [], count: 256)
        for token in tokens where !token.content.isEmpty {
            let pattern = Pattern(
                bytes: Array(token.content.utf8), id: token.id,
                singleWord: token.singleWord, lstrip: token.lstrip, rstrip: token.rstrip
            )
            if token.normalized {
                normalized[Int(pattern.bytes[0])].append(pattern)
            } else {
                raw[Int(pattern.bytes[0])].append(pattern)
            }
        }
        for index in 0..<256 {
            raw[index].sort { $0.bytes.count > $1.bytes.count }
            normalized[index].sort { $0.bytes.count > $1.bytes.count }
        }
        rawPatterns = raw
        normalizedPatterns = normalized
        isEmpty = tokens.allSatisfy { $0.content.isEmpty }
    }

    /// Splits `bytes` into added tokens and text pieces, in order. Empty text pieces are dropped.
    func split(_ bytes: UnsafeBufferPointer<UInt8>, into pieces: inout [Piece]) {
        pieces.removeAll(keepingCapacity: true)
        if isEmpty {
            if bytes.count > 0 { pieces.append(.text(0..<bytes.count)) }
            return
        }
        var firstPass: [Piece] = []
        findMatches(bytes, 0..<bytes.count, patterns: rawPatterns, into: &firstPass)
        for piece in firstPass {
            switch piece {
            case .token:
                pieces.append(piece)
            case let .text(range):
                findMatches(bytes, range, patterns: normalizedPatterns, into: &pieces)
            }
        }
    }

    /// The two passes one at a time, for tokenizers that normalize the text between them (T5): `.raw` finds the
    /// tokens with `normalized == false` in the original text, `.normalized` the others in normalized text.
    /// Empty text pieces are dropped.
    enum Pass {
        case raw
        case normalized
    }

    func split(_ bytes: UnsafeBufferPointer<UInt8>, pass: Pass, into pieces: inout [Piece]) {
        pieces.removeAll(keepingCapacity: true)
        guard bytes.count > 0 else { return }
        findMatches(bytes, 0..<bytes.count, patterns: pass == .raw ? rawPatterns : normalizedPatterns, into: &pieces)
    }

    private func findMatches(
        _ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, patterns: [[Pattern]], into pieces: inout [Piece]
    ) {
        var searchFrom = range.lowerBound
        var pieceStart = range.lowerBound
        while let found = leftmostLongest(bytes, from: searchFrom, to: range.upperBound, patterns: patterns) {
            // The reference keeps iterating its automaton from the end of the raw match, whatever
            // single_word or rstrip decide below.
            searchFrom = found.end
            let pattern = found.pattern
            var start = found.start
            var stop = found.end
            if pattern.singleWord {
                let spaceBefore = start == range.lowerBound || !UnicodeText.endsWithWordCharacter(bytes, range.lowerBound, start)
                let spaceAfter = stop == range.upperBound || !UnicodeText.startsWithWordCharacter(bytes, stop, range.upperBound)
                if !spaceBefore || !spaceAfter { continue }
            }
            if pattern.lstrip {
                start = max(UnicodeText.startOfTrailingWhitespace(bytes, range.lowerBound, start), pieceStart)
            }
            if pattern.rstrip {
                stop = UnicodeText.endOfLeadingWhitespace(bytes, stop, range.upperBound)
            }
            if pieceStart < start {
                pieces.append(.text(pieceStart..<start))
            }
            pieces.append(.token(pattern.id))
            pieceStart = stop
        }
        if pieceStart < range.upperBound {
            pieces.append(.text(pieceStart..<range.upperBound))
        }
    }

    private func leftmostLongest(
        _ bytes: UnsafeBufferPointer<UInt8>, from: Int, to end: Int, patterns: [[Pattern]]
    ) -> (start: Int, end: Int, pattern: Pattern)? {
        var position = from
        while position < end {
            let candidates = patterns[Int(bytes[position])]
            for pattern in candidates where position + pattern.bytes.count <= end {
                var matches = true
                for (offset, byte) in pattern.bytes.enumerated() where bytes[position + offset] != byte {
                    matches = false
                    break
                }
                if matches {
                    return (position, position + pattern.bytes.count, pattern)
                }
            }
            position += 1
        }
        return nil
    }
}

// MARK: - Scalar tests on UTF-8 bytes (for added-token options)

enum UnicodeText {
    /// Decodes the scalar starting at `index` (valid UTF-8 assumed); returns (value, length).
    @inline(__always)
    static func scalar(at index: Int, in bytes: UnsafeBufferPointer<UInt8>, end: Int) -> (UInt32, Int) {
        let lead = bytes[index]
        var value: UInt32
        var length: Int
        switch lead {
        case 0..<0x80: return (UInt32(lead), 1)
        case 0x80..<0xE0: value = UInt32(lead & 0x1F); length = 2
        case 0xE0..<0xF0: value = UInt32(lead & 0x0F); length = 3
        default: value = UInt32(lead & 0x07); length = 4
        }
        length = min(length, end - index)
        for offset in 1..<max(length, 1) {
            value = (value << 6) | UInt32(bytes[index + offset] & 0x3F)
        }
        return (value, max(length, 1))
    }

    /// Start of the scalar that ends at `end` (exclusive), not before `start`.
    @inline(__always)
    static func startOfLastScalar(_ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) -> Int {
        var index = end - 1
        while index > start, bytes[index] & 0xC0 == 0x80 { index -= 1 }
        return index
    }

    /// Rust regex `\w`: Alphabetic, marks, decimal digits, connector punctuation, join controls.
    static func isWordCharacter(_ value: UInt32) -> Bool {
        guard let scalar = Unicode.Scalar(value) else { return false }
        let properties = scalar.properties
        if properties.isAlphabetic || properties.isJoinControl { return true }
        switch properties.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation:
            return true
        default:
            return false
        }
    }

    static func isWhiteSpace(_ value: UInt32) -> Bool {
        ScalarClassifier.isWhiteSpace(value)
    }

    static func endsWithWordCharacter(_ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) -> Bool {
        guard end > start else { return false }
        let last = startOfLastScalar(bytes, start, end)
        return isWordCharacter(scalar(at: last, in: bytes, end: end).0)
    }

    static func startsWithWordCharacter(_ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) -> Bool {
        guard end > start else { return false }
        return isWordCharacter(scalar(at: start, in: bytes, end: end).0)
    }

    /// Where the run of whitespace that ends `bytes[start..<end]` begins (== end when there is none).
    static func startOfTrailingWhitespace(_ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) -> Int {
        var position = end
        while position > start {
            let previous = startOfLastScalar(bytes, start, position)
            guard isWhiteSpace(scalar(at: previous, in: bytes, end: position).0) else { break }
            position = previous
        }
        return position
    }

    /// Where the run of whitespace that starts `bytes[start..<end]` ends (== start when there is none).
    static func endOfLeadingWhitespace(_ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) -> Int {
        var position = start
        while position < end {
            let (value, length) = scalar(at: position, in: bytes, end: end)
            guard isWhiteSpace(value) else { break }
            position += length
        }
        return position
    }
}
