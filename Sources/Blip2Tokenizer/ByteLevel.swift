// MARK: - GPT-2 byte <-> printable character table

/// GPT-2 spells every byte as a printable Unicode character so that BPE never sees whitespace or
/// control bytes: printable Latin-1 bytes stand for themselves, the other 68 bytes are moved to
/// U+0100... in byte order. `Ġ` (U+0120) is the space byte, `Ċ` (U+010A) the newline.
enum ByteLevel {
    /// byte -> the character that spells it.
    static let scalarForByte: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var shifted: UInt32 = 256
        for byte in 0..<256 {
            let printable = (0x21...0x7E).contains(byte) || (0xA1...0xAC).contains(byte) || (0xAE...0xFF).contains(byte)
            if printable {
                table[byte] = Unicode.Scalar(UInt8(byte))
            } else {
                table[byte] = Unicode.Scalar(shifted)!
                shifted += 1
            }
        }
        return table
    }()

    /// The highest scalar value that spells a byte (U+0143).
    static let highestScalar: UInt32 = 0x143

    /// scalar value -> byte, or -1 for scalars that spell no byte.
    static let byteForScalar: [Int16] = {
        var table = [Int16](repeating: -1, count: Int(highestScalar) + 1)
        for (byte, scalar) in scalarForByte.enumerated() {
            table[Int(scalar.value)] = Int16(byte)
        }
        return table
    }()

    /// The byte-level spelling of a single byte, e.g. 0x20 -> "Ġ".
    static func token(forByte byte: UInt8) -> String {
        String(Character(scalarForByte[Int(byte)]))
    }

    /// The raw bytes a token stands for when decoding.
    ///
    /// Like the `tokenizers` ByteLevel decoder: if any character of the token spells no byte (added
    /// tokens such as `<image>` are plain ASCII and do spell bytes, but an added `日本` would not),
    /// the whole token contributes its own UTF-8 instead.
    static func appendDecodedBytes(ofToken token: String, to bytes: inout [UInt8]) {
        let start = bytes.count
        for scalar in token.unicodeScalars {
            let value = scalar.value
            guard value <= highestScalar, case let byte = byteForScalar[Int(value)], byte >= 0 else {
                bytes.removeSubrange(start...)
                bytes.append(contentsOf: token.utf8)
                return
            }
            bytes.append(UInt8(byte))
        }
    }
}
