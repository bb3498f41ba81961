// MARK: - GPT-2 pre-tokenization, by hand
//
// The reference splits text with the Oniguruma regex
//     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// Every scalar is exactly one of letter (\p{L}), number (\p{N}), whitespace (\s) or other, so the
// regex always matches and can be replayed as a small state machine over those four classes.

/// How the regex sees one Unicode scalar.
enum ScalarClass: UInt8 {
    case letter = 0, number, whitespace, other
}

enum ScalarClassifier {
    /// The newest Unicode version the reference's regex engine knows. `tokenizers` 0.23 bundles
    /// Oniguruma with Unicode 16.0 tables; scalars assigned later are unassigned (class `other`)
    /// to it even where the Swift runtime knows them. Tests probe every scalar against the
    /// reference, so a change on either side shows up as a failure, not as silent drift.
    static let referenceUnicodeVersion: (major: Int, minor: Int) = (16, 0)

    /// Classes of the Basic Multilingual Plane, computed once: property lookups cost ~60-80 ns
    /// each, a table read is one load, and most text lives in the BMP.
    static let basicPlane: [ScalarClass] = {
        var table = [ScalarClass](repeating: .other, count: 0x10000)
        for value in 0..<0x10000 {
            if let scalar = Unicode.Scalar(UInt32(value)) {
                table[value] = computeClass(scalar)
            }
        }
        return table
    }()

    @inline(__always)
    static func classOf(_ value: UInt32) -> ScalarClass {
        if value < 0x10000 {
            return basicPlane[Int(value)]
        }
        guard let scalar = Unicode.Scalar(value) else { return .other }
        return computeClass(scalar)
    }

    /// Oniguruma's `\s` for Unicode text is the White_Space property; the stable list is short.
    @inline(__always)
    static func isWhiteSpace(_ value: UInt32) -> Bool {
        switch value {
        case 0x09...0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
            return true
        default:
            return false
        }
    }

    static func computeClass(_ scalar: Unicode.Scalar) -> ScalarClass {
        if isWhiteSpace(scalar.value) { return .whitespace }
        let properties = scalar.properties
        let candidate: ScalarClass
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            candidate = .letter
        case .decimalNumber, .letterNumber, .otherNumber:
            candidate = .number
        default:
            return .other
        }
        guard let age = properties.age else { return .other }
        let newer = age.major > referenceUnicodeVersion.major
            || (age.major == referenceUnicodeVersion.major && age.minor > referenceUnicodeVersion.minor)
        return newer ? .other : candidate
    }
}

/// Reusable buffers for splitting one piece of text; sized once per `encode` call.
struct PreTokenizerScratch {
    var classes: [ScalarClass] = []
    /// Byte offset of each scalar, plus one final entry for the end of the piece.
    var offsets: [Int32] = []
}

enum PreTokenizer {
    /// Calls `emit(start, end)` with the byte range of every pre-token of `bytes[range]`, in order.
    ///
    /// `bytes` must be valid UTF-8 (it always comes from a Swift `String`).
    @inline(__always)
    static func split(
        _ bytes: UnsafeBufferPointer<UInt8>,
        _ range: Range<Int>,
        scratch: inout PreTokenizerScratch,
        emit: (Int, Int) -> Void
    ) {
        scratch.classes.removeAll(keepingCapacity: true)
        scratch.offsets.removeAll(keepingCapacity: true)

        // Decode scalars once; the regex needs up to two scalars of lookahead.
        var position = range.lowerBound
        let end = range.upperBound
        while position < end {
            let lead = bytes[position]
            var value: UInt32
            var length: Int
            if lead < 0x80 {
                value = UInt32(lead)
                length = 1
            } else if lead < 0xE0 {
                value = UInt32(lead & 0x1F)
                length = 2
            } else if lead < 0xF0 {
                value = UInt32(lead & 0x0F)
                length = 3
            } else {
                value = UInt32(lead & 0x07)
                length = 4
            }
            if position + length > end { length = end - position }  // unreachable for valid UTF-8
            var index = 1
            while index < length {
                value = (value << 6) | UInt32(bytes[position + index] & 0x3F)
                index += 1
            }
            scratch.offsets.append(Int32(position))
            scratch.classes.append(lead < 0x80 ? asciiClass[Int(lead)] : ScalarClassifier.classOf(value))
            position += length
        }
        scratch.offsets.append(Int32(end))

        let count = scratch.classes.count
        scratch.classes.withUnsafeBufferPointer { classes in
            scratch.offsets.withUnsafeBufferPointer { offsets in
                // First byte of scalar i; contractions and the optional space are ASCII, and a
                // non-ASCII scalar's first byte is >= 0xC2, so comparing first bytes is exact.
                @inline(__always) func byte(_ i: Int) -> UInt8 { bytes[Int(offsets[i])] }

                var i = 0
                while i < count {
                    let start = i
                    var stop = -1
                    let first = byte(i)

                    // 's 't 're 've 'm 'll 'd (lowercase only, like the reference)
                    if first == UInt8(ascii: "'"), i + 1 < count {
                        let second = byte(i + 1)
                        switch second {
                        case UInt8(ascii: "s"), UInt8(ascii: "t"), UInt8(ascii: "m"), UInt8(ascii: "d"):
                            stop = i + 2
                        case UInt8(ascii: "r"), UInt8(ascii: "v"):
                            if i + 2 < count, byte(i + 2) == UInt8(ascii: "e") { stop = i + 3 }
                        case UInt8(ascii: "l"):
                            if i + 2 < count, byte(i + 2) == UInt8(ascii: "l") { stop = i + 3 }
                        default:
                            break
                        }
                    }

                    if stop < 0 {
                        let kind = classes[i]
                        if first == UInt8(ascii: " "), i + 1 < count, classes[i + 1] != .whitespace {
                            // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+` with the space
                            let runKind = classes[i + 1]
                            var j = i + 2
                            while j < count, classes[j] == runKind { j += 1 }
                            stop = j
                        } else if kind != .whitespace {
                            var j = i + 1
                            while j < count, classes[j] == kind { j += 1 }
                            stop = j
                        } else {
                            // `\s+(?!\S)` leaves the last whitespace to the word after it;
                            // a lone whitespace before a word falls through to `\s+`.
                            var j = i + 1
                            while j < count, classes[j] == .whitespace { j += 1 }
                            if j == count || j - i == 1 {
                                stop = j
                            } else {
                                stop = j - 1
                            }
                        }
                    }
                    emit(Int(offsets[start]), Int(offsets[stop]))
                    i = stop
                }
            }
        }
    }

    static let asciiClass: [ScalarClass] = (0..<128).map { value in
        ScalarClassifier.computeClass(Unicode.Scalar(UInt8(value)))
    }
}
