// MARK: - Where a request body stops being JSON
//
// Foundation's decoder says only that the data "was not valid JSON". A client fixing its request wants the
// place: this walks the grammar of RFC 8259 once, after the decoder refused a body, and names the first
// byte that cannot continue a JSON text and what could have.

enum JSONSyntax {
    struct Problem: Error, Equatable {
        /// 0-based byte offset; line and column are 1-based, columns counted in bytes.
        let offset: Int
        let line: Int
        let column: Int
        let expected: String

        var description: String { "at line \(line), column \(column) (byte \(offset)): expected \(expected)" }
    }

    /// Deeper nesting is refused rather than walked (the walk recurses).
    static let maxDepth = 512

    /// The first place `bytes` breaks the grammar, or nil for a well-formed JSON text.
    static func firstProblem(in bytes: [UInt8]) -> Problem? {
        var walker = Walker(bytes: bytes)
        do {
            walker.skipSpace()
            try walker.value(depth: 0)
            walker.skipSpace()
            if walker.index < bytes.count { throw walker.fail("the end of the body after the JSON value") }
            return nil
        } catch {
            return error as? Problem
        }
    }

    private struct Walker {
        let bytes: [UInt8]
        var index = 0

        func fail(_ expected: String) -> Problem {
            let offset = min(index, bytes.count)
            var line = 1, lineStart = 0
            for (i, byte) in bytes[..<offset].enumerated() where byte == UInt8(ascii: "\n") {
                line += 1
                lineStart = i + 1
            }
            let what = index < bytes.count ? expected : "\(expected), but the body ends"
            return Problem(offset: offset, line: line, column: offset - lineStart + 1, expected: what)
        }

        var current: UInt8? { index < bytes.count ? bytes[index] : nil }

        mutating func skipSpace() {
            while let byte = current, byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D { index += 1 }
        }

        mutating func expect(_ byte: Character, _ expected: String) throws {
            guard current == byte.asciiValue else { throw fail(expected) }
            index += 1
        }

        mutating func value(depth: Int) throws {
            guard let byte = current else { throw fail("a value") }
            switch byte {
            case UInt8(ascii: "{"):
                guard depth < JSONSyntax.maxDepth else { throw fail("at most \(JSONSyntax.maxDepth) nested objects and arrays") }
                index += 1
                skipSpace()
                if current == UInt8(ascii: "}") { index += 1; return }
                while true {
                    guard current == UInt8(ascii: "\"") else { throw fail("a field name in double quotes") }
                    try string()
                    skipSpace()
                    try expect(":", "':' after the field name")
                    skipSpace()
                    try value(depth: depth + 1)
                    skipSpace()
                    if current == UInt8(ascii: ",") { index += 1; skipSpace(); continue }
                    try expect("}", "',' or '}'")
                    return
                }
            case UInt8(ascii: "["):
                guard depth < JSONSyntax.maxDepth else { throw fail("at most \(JSONSyntax.maxDepth) nested objects and arrays") }
                index += 1
                skipSpace()
                if current == UInt8(ascii: "]") { index += 1; return }
                while true {
                    try value(depth: depth + 1)
                    skipSpace()
                    if current == UInt8(ascii: ",") { index += 1; skipSpace(); continue }
                    try expect("]", "',' or ']'")
                    return
                }
            case UInt8(ascii: "\""):
                try string()
            case UInt8(ascii: "t"): try literal("true")
            case UInt8(ascii: "f"): try literal("false")
            case UInt8(ascii: "n"): try literal("null")
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                try number()
            default:
                throw fail("a value (an object, array, string, number, true, false or null)")
            }
        }

        mutating func literal(_ word: String) throws {
            for character in word.utf8 {
                guard current == character else { throw fail("\(word)") }
                index += 1
            }
        }

        mutating func digits() throws {
            guard let byte = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { throw fail("a digit") }
            while let byte = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) { index += 1 }
        }

        mutating func number() throws {
            if current == UInt8(ascii: "-") { index += 1 }
            if current == UInt8(ascii: "0") { index += 1 } else { try digits() }
            if current == UInt8(ascii: ".") { index += 1; try digits() }
            if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
                index += 1
                if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { index += 1 }
                try digits()
            }
        }

        /// A string, from its opening quote; UTF-8 is checked by the decoder, not here.
        mutating func string() throws {
            index += 1
            while let byte = current {
                switch byte {
                case UInt8(ascii: "\""):
                    index += 1
                    return
                case UInt8(ascii: "\\"):
                    index += 1
                    guard let escaped = current else { throw fail("an escape after '\\'") }
                    if escaped == UInt8(ascii: "u") {
                        index += 1
                        for _ in 0..<4 {
                            guard let hex = current, hex.isHexDigit else { throw fail("four hexadecimal digits after \\u") }
                            index += 1
                        }
                    } else {
                        guard "\"\\/bfnrt".utf8.contains(escaped) else { throw fail("one of \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u after '\\'") }
                        index += 1
                    }
                case 0..<0x20:
                    throw fail("no control characters inside a string (write them as \\n, \\t or \\u00XX)")
                default:
                    index += 1
                }
            }
            throw fail("'\"' to close the string")
        }
    }
}

private extension UInt8 {
    var isHexDigit: Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(self)
            || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(self)
    }
}
