import Foundation

// MARK: - The steps a SentencePiece tokenizer.json declares
//
// Each step is the `tokenizers` component of the same name, limited to the options SentencePiece models
// (T5, and byte-fallback models such as Llama's) use. Anything else in a file is refused when it is read,
// naming the step, rather than run differently from the reference.

/// A `normalizer` entry.
indirect enum TextNormalizer: Sendable {
    case precompiled(PrecompiledCharsmap)
    /// Removes leading and/or trailing Unicode whitespace.
    case strip(left: Bool, right: Bool)
    /// Replaces every occurrence of a literal string.
    case replace(pattern: String, content: String)
    case sequence([TextNormalizer])

    func apply(_ text: String) -> String {
        switch self {
        case let .precompiled(charsmap):
            return charsmap.normalize(text[...]) ?? text
        case let .strip(left, right):
            var scalars = Substring(text).unicodeScalars
            if left { while let first = scalars.first, first.properties.isWhitespace { scalars.removeFirst() } }
            if right { while let last = scalars.last, last.properties.isWhitespace { scalars.removeLast() } }
            return String(scalars)
        case let .replace(pattern, content):
            return replacingLiteral(text, pattern, content)
        case let .sequence(steps):
            return steps.reduce(text) { $1.apply($0) }
        }
    }
}

/// Non-overlapping, left to right, on bytes (Swift's own replacement compares by canonical equivalence).
func replacingLiteral(_ text: String, _ pattern: String, _ content: String) -> String {
    let source = Array(text.utf8)
    let needle = Array(pattern.utf8)
    guard !needle.isEmpty, source.count >= needle.count else { return text }
    var output: [UInt8] = []
    output.reserveCapacity(source.count)
    var index = 0
    while index < source.count {
        if index + needle.count <= source.count, source[index] == needle[0],
           source[index..<(index + needle.count)].elementsEqual(needle) {
            output.append(contentsOf: content.utf8)
            index += needle.count
        } else {
            output.append(source[index])
            index += 1
        }
    }
    return String(decoding: output, as: UTF8.self)
}

/// A `pre_tokenizer` entry: turns one text piece into the words the model segments.
indirect enum TextPreTokenizer: Sendable {
    /// Splits on Unicode whitespace, dropping it.
    case whitespaceSplit
    /// Spaces become `replacement`; `prepend` puts one in front of a piece that lacks it; `split` cuts before
    /// every `replacement` (each cut keeps the replacement at the start of the next word).
    case metaspace(replacement: Unicode.Scalar, prepend: Bool, split: Bool)
    case sequence([TextPreTokenizer])

    func apply(_ words: [String]) -> [String] {
        switch self {
        case .whitespaceSplit:
            return words.flatMap { word in
                word.unicodeScalars.split(whereSeparator: { $0.properties.isWhitespace }).map { String($0) }
            }
        case let .metaspace(replacement, prepend, split):
            let marker = String(replacement)
            return words.flatMap { word -> [String] in
                var text = replacingLiteral(word, " ", marker)
                // Prepending to an empty piece does nothing in the reference.
                if prepend, !text.isEmpty, !text.hasPrefix(marker) { text = marker + text }
                guard split else { return [text] }
                return Self.splitKeepingMarker(text, marker)
            }
        case let .sequence(steps):
            return steps.reduce(words) { $1.apply($0) }
        }
    }

    /// `split(marker, MergedWithNext)`: "▁a▁▁b" -> ["▁a", "▁", "▁b"].
    private static func splitKeepingMarker(_ text: String, _ marker: String) -> [String] {
        let bytes = Array(text.utf8)
        let needle = Array(marker.utf8)
        var words: [String] = []
        var start = 0
        var index = 0
        while index + needle.count <= bytes.count {
            if bytes[index..<(index + needle.count)].elementsEqual(needle) {
                if index > start { words.append(String(decoding: bytes[start..<index], as: UTF8.self)) }
                start = index
                index += needle.count
            } else {
                index += 1
            }
        }
        if start < bytes.count { words.append(String(decoding: bytes[start...], as: UTF8.self)) }
        return words
    }
}

/// A `decoder` entry: maps the list of token strings to a new list; the results are concatenated at the end.
indirect enum TokenDecoder: Sendable {
    /// `replacement` becomes a space, except in the first token when a prefix was prepended (there it is dropped).
    case metaspace(replacement: Unicode.Scalar, dropInFirstToken: Bool)
    case replace(pattern: String, content: String)
    /// Runs of `<0xNN>` tokens become the text their bytes spell, or one U+FFFD per byte when that is not UTF-8.
    case byteFallback
    /// All tokens joined into one.
    case fuse
    /// Removes up to `start` leading and `stop` trailing `content` characters from each token.
    case strip(content: Unicode.Scalar, start: Int, stop: Int)
    case sequence([TokenDecoder])

    func apply(_ tokens: [String]) -> [String] {
        switch self {
        case let .metaspace(replacement, dropInFirstToken):
            return tokens.enumerated().map { index, token in
                var output = String.UnicodeScalarView()
                for scalar in token.unicodeScalars {
                    if scalar == replacement {
                        if !(index == 0 && dropInFirstToken) { output.append(" ") }
                    } else {
                        output.append(scalar)
                    }
                }
                return String(output)
            }
        case let .replace(pattern, content):
            return tokens.map { replacingLiteral($0, pattern, content) }
        case .byteFallback:
            var output: [String] = []
            var pending: [UInt8] = []
            func flush() {
                guard !pending.isEmpty else { return }
                if let text = String(validatingUTF8Bytes: pending) {
                    output.append(text)
                } else {
                    output.append(contentsOf: repeatElement("\u{FFFD}", count: pending.count))
                }
                pending.removeAll()
            }
            for token in tokens {
                if let byte = Self.bytePiece(token) {
                    pending.append(byte)
                } else {
                    flush()
                    output.append(token)
                }
            }
            flush()
            return output
        case .fuse:
            return [tokens.joined()]
        case let .strip(content, start, stop):
            return tokens.map { token in
                let characters = Array(token.unicodeScalars)
                var lower = 0
                while lower < min(start, characters.count), characters[lower] == content { lower += 1 }
                var upper = characters.count
                var removed = 0
                while removed < stop, upper > lower, characters[upper - 1] == content {
                    upper -= 1
                    removed += 1
                }
                return String(String.UnicodeScalarView(characters[lower..<upper]))
            }
        case let .sequence(steps):
            return steps.reduce(tokens) { $1.apply($0) }
        }
    }

    /// The byte a `<0xNN>` token stands for: six bytes, `<0x`, two characters Rust's `u8::from_str_radix(_, 16)`
    /// accepts (so `+F` counts, as one hex digit with a sign), `>`.
    static func bytePiece(_ token: String) -> UInt8? {
        let bytes = Array(token.utf8)
        guard bytes.count == 6, bytes[0] == UInt8(ascii: "<"), bytes[1] == UInt8(ascii: "0"), bytes[2] == UInt8(ascii: "x"),
              bytes[5] == UInt8(ascii: ">") else { return nil }
        func hex(_ byte: UInt8) -> UInt8? {
            switch byte {
            case 0x30...0x39: return byte - 0x30
            case 0x41...0x46: return byte - 0x41 + 10
            case 0x61...0x66: return byte - 0x61 + 10
            default: return nil
            }
        }
        if bytes[3] == UInt8(ascii: "+") { return hex(bytes[4]) }
        guard let high = hex(bytes[3]), let low = hex(bytes[4]) else { return nil }
        return high << 4 | low
    }
}

/// The `post_processor` for one sequence: T5's `TemplateProcessing` puts `</s>` after the text.
struct SingleSequenceTemplate: Sendable {
    enum Part: Sendable, Equatable {
        case sequence
        case special([Int])
    }
    var parts: [Part]

    static let none = SingleSequenceTemplate(parts: [.sequence])

    func apply(_ ids: [Int]) -> [Int] {
        parts.flatMap { part -> [Int] in
            switch part {
            case .sequence: return ids
            case let .special(specialIds): return specialIds
            }
        }
    }
}
