import Foundation

// MARK: - vocab.json, parsed directly

/// A parser for one flat JSON object of string -> integer, which is all `vocab.json` is.
///
/// `JSONDecoder` takes ~150-200 ms for OPT's 50k entries on a desktop core (seconds on a Pi);
/// scanning the bytes directly takes a few milliseconds. Anything that is not such an object is
/// rejected with the byte offset of the problem.
enum VocabularyJSON {
    static func parse(_ data: Data, fileName: String) throws -> [String: Int] {
        try data.withUnsafeBytes { raw -> [String: Int] in
            var parser = Parser(bytes: raw.bindMemory(to: UInt8.self), fileName: fileName)
            return try parser.parseObject()
        }
    }

    private struct Parser {
        let bytes: UnsafeBufferPointer<UInt8>
        let fileName: String
        var position = 0
        var scratch: [UInt8] = []

        init(bytes: UnsafeBufferPointer<UInt8>, fileName: String) {
            self.bytes = bytes
            self.fileName = fileName
        }

        func failure(_ reason: String) -> TokenizerError {
            .malformedJSON(name: fileName, reason: "\(reason) at byte \(position)")
        }

        mutating func skipWhitespace() {
            while position < bytes.count {
                switch bytes[position] {
                case 0x20, 0x09, 0x0A, 0x0D: position += 1
                default: return
                }
            }
        }

        mutating func expect(_ byte: UInt8, _ what: String) throws {
            skipWhitespace()
            guard position < bytes.count, bytes[position] == byte else { throw failure("expected \(what)") }
            position += 1
        }

        mutating func parseObject() throws -> [String: Int] {
            if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF {
                throw failure("unexpected byte-order mark")
            }
            try expect(UInt8(ascii: "{"), "'{' (vocab.json must be an object of token -> id)")
            var result = [String: Int](minimumCapacity: bytes.count / 16)
            skipWhitespace()
            if position < bytes.count, bytes[position] == UInt8(ascii: "}") {
                position += 1
            } else {
                while true {
                    skipWhitespace()
                    let key = try parseString()
                    try expect(UInt8(ascii: ":"), "':'")
                    let value = try parseInteger()
                    result[key] = value  // a repeated key keeps its last value, like serde_json
                    skipWhitespace()
                    guard position < bytes.count else { throw failure("unterminated object") }
                    if bytes[position] == UInt8(ascii: ",") {
                        position += 1
                        continue
                    }
                    if bytes[position] == UInt8(ascii: "}") {
                        position += 1
                        break
                    }
                    throw failure("expected ',' or '}'")
                }
            }
            skipWhitespace()
            guard position == bytes.count else { throw failure("trailing characters after the object") }
            return result
        }

        mutating func parseInteger() throws -> Int {
            skipWhitespace()
            var negative = false
            if position < bytes.count, bytes[position] == UInt8(ascii: "-") {
                negative = true
                position += 1
            }
            let start = position
            var value = 0
            while position < bytes.count, bytes[position] >= 0x30, bytes[position] <= 0x39 {
                let (product, overflow1) = value.multipliedReportingOverflow(by: 10)
                let (sum, overflow2) = product.addingReportingOverflow(Int(bytes[position] - 0x30))
                if overflow1 || overflow2 { throw failure("id too large") }
                value = sum
                position += 1
            }
            guard position > start else { throw failure("expected an integer id") }
            if position < bytes.count, [UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E")].contains(bytes[position]) {
                throw failure("ids must be integers")
            }
            return negative ? -value : value
        }

        mutating func parseString() throws -> String {
            guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else { throw failure("expected a string") }
            position += 1
            let start = position
            // Fast path: no escapes.
            while position < bytes.count {
                let byte = bytes[position]
                if byte == UInt8(ascii: "\"") {
                    let slice = UnsafeBufferPointer(rebasing: bytes[start..<position])
                    position += 1
                    return try makeString(slice)
                }
                if byte == UInt8(ascii: "\\") { break }
                if byte < 0x20 { throw failure("control character in string") }
                position += 1
            }
            scratch.removeAll(keepingCapacity: true)
            scratch.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start..<position]))
            while position < bytes.count {
                let byte = bytes[position]
                position += 1
                switch byte {
                case UInt8(ascii: "\""):
                    return try scratch.withUnsafeBufferPointer { try makeString($0) }
                case UInt8(ascii: "\\"):
                    guard position < bytes.count else { throw failure("unterminated escape") }
                    let escape = bytes[position]
                    position += 1
                    switch escape {
                    case UInt8(ascii: "\""): scratch.append(0x22)
                    case UInt8(ascii: "\\"): scratch.append(0x5C)
                    case UInt8(ascii: "/"): scratch.append(0x2F)
                    case UInt8(ascii: "b"): scratch.append(0x08)
                    case UInt8(ascii: "f"): scratch.append(0x0C)
                    case UInt8(ascii: "n"): scratch.append(0x0A)
                    case UInt8(ascii: "r"): scratch.append(0x0D)
                    case UInt8(ascii: "t"): scratch.append(0x09)
                    case UInt8(ascii: "u"):
                        var value = try parseHex4()
                        if (0xD800..<0xDC00).contains(value) {
                            guard position + 1 < bytes.count, bytes[position] == UInt8(ascii: "\\"),
                                  bytes[position + 1] == UInt8(ascii: "u") else { throw failure("lone leading surrogate") }
                            position += 2
                            let low = try parseHex4()
                            guard (0xDC00..<0xE000).contains(low) else { throw failure("invalid surrogate pair") }
                            value = 0x10000 + ((value - 0xD800) << 10) + (low - 0xDC00)
                        } else if (0xDC00..<0xE000).contains(value) {
                            throw failure("lone trailing surrogate")
                        }
                        guard let scalar = Unicode.Scalar(value) else { throw failure("invalid escape") }
                        scratch.append(contentsOf: String(Character(scalar)).utf8)
                    default:
                        throw failure("invalid escape")
                    }
                default:
                    if byte < 0x20 { throw failure("control character in string") }
                    scratch.append(byte)
                }
            }
            throw failure("unterminated string")
        }

        mutating func parseHex4() throws -> UInt32 {
            guard position + 4 <= bytes.count else { throw failure("truncated \\u escape") }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let byte = bytes[position]
                let digit: UInt32
                switch byte {
                case 0x30...0x39: digit = UInt32(byte - 0x30)
                case 0x41...0x46: digit = UInt32(byte - 0x41 + 10)
                case 0x61...0x66: digit = UInt32(byte - 0x61 + 10)
                default: throw failure("invalid hex digit in \\u escape")
                }
                value = value << 4 | digit
                position += 1
            }
            return value
        }

        func makeString(_ slice: UnsafeBufferPointer<UInt8>) throws -> String {
            // Reject invalid UTF-8 instead of silently replacing it, as the reference does.
            let string = String(decoding: slice, as: UTF8.self)
            if string.utf8.count != slice.count || !string.utf8.elementsEqual(slice) {
                throw failure("invalid UTF-8 in string")
            }
            return string
        }
    }
}
