import Blip2Core
import Foundation

// MARK: - safetensors reader
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON ({"name": {"dtype", "shape",
// "data_offsets": [begin, end]}, "__metadata__": {...}}), then the data area that the offsets index.
// Every number in the header is checked against the file before any tensor byte is touched.

public enum SafeTensorsDType: Equatable, Sendable, CustomStringConvertible {
    case f32, f16, bf16
    /// A dtype the format defines but the converter does not take as a weight (I64, F64, U8, ...).
    case other(String, bytes: Int)

    static func parse(_ name: String) -> SafeTensorsDType? {
        switch name {
        case "F32": return .f32
        case "F16": return .f16
        case "BF16": return .bf16
        case "F64", "I64", "U64": return .other(name, bytes: 8)
        case "I32", "U32": return .other(name, bytes: 4)
        case "I16", "U16": return .other(name, bytes: 2)
        case "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2": return .other(name, bytes: 1)
        default: return nil
        }
    }

    public var byteSize: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        case .other(_, let bytes): return bytes
        }
    }

    public var description: String {
        switch self {
        case .f32: return "F32"
        case .f16: return "F16"
        case .bf16: return "BF16"
        case .other(let name, _): return name
        }
    }
}

public struct SafeTensorsEntry: Sendable {
    public let name: String
    public let dtype: SafeTensorsDType
    public let shape: [Int]
    /// Absolute byte range inside the file.
    public let range: Range<Int>
    public var elementCount: Int { range.count / dtype.byteSize }
}

/// A safetensors file that cannot be read: the path and what is wrong with it.
public typealias SafeTensorsError = FileError

// @unchecked Sendable: a read-only mapping and its header, never written after init.
public final class SafeTensorsFile: @unchecked Sendable {
    /// Cap on the JSON header. The format allows 100 MB, but a BLIP-2 shard's header is under 1 MB
    /// (blip2-opt-2.7b: about 1,200 tensors in 0.15 MB); 16 MB leaves room for 100,000 tensors.
    public static let maxHeaderBytes = 16 << 20
    /// Limits on one member of the header: an entry is an object of a string and two short arrays.
    static let maxMemberBytes = 1 << 20
    static let maxArrayElements = 64

    public let path: String
    public let file: MappedFile
    public let entries: [SafeTensorsEntry]
    public let metadata: [String: String]
    private let index: [String: Int]

    public init(path: String) throws {
        self.path = path
        func fail(_ message: String) -> SafeTensorsError { SafeTensorsError(path: path, message) }
        do { file = try MappedFile(path: path) } catch let error as FileError { throw fail(error.message) }
        let bytes = file.bytes
        guard bytes.count >= 8 else {
            throw fail("not a safetensors file: \(bytes.count) bytes is shorter than the 8-byte header length")
        }
        let headerLength = bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self).littleEndian
        guard headerLength <= UInt64(Self.maxHeaderBytes) else {
            throw fail("header length \(headerLength) exceeds the limit of \(Self.maxHeaderBytes) bytes (corrupt or not safetensors)")
        }
        let dataStart = 8 + Int(headerLength)
        guard dataStart <= bytes.count else {
            throw fail("truncated: the header claims \(headerLength) bytes but the file has \(bytes.count - 8) after the length")
        }
        guard headerLength >= 2, bytes[8] == UInt8(ascii: "{") else {
            throw fail("header is not a JSON object")
        }
        let header = UnsafeRawBufferPointer(rebasing: bytes[8..<dataStart])
        let dataSize = bytes.count - dataStart
        var metadata: [String: String] = [:]
        var entries: [SafeTensorsEntry] = []
        var names = Set<String>()
        let members: [(key: Range<Int>, value: Range<Int>)]
        do { members = try Self.members(of: header) } catch let violation as FormatViolation {
            throw fail("header is not valid JSON (\(violation.message))")
        }
        // One member at a time, each turned into an entry before the next is parsed: memory stays that of the entries.
        for (keyRange, valueRange) in members {
            let key: Any, value: Any
            do {
                key = try JSONSerialization.jsonObject(with: Data(header[keyRange]), options: .fragmentsAllowed)
                value = try JSONSerialization.jsonObject(with: Data(header[valueRange]), options: .fragmentsAllowed)
            } catch {
                throw fail("header is not valid JSON (at bytes \(keyRange.lowerBound)..<\(valueRange.upperBound): \(error.localizedDescription))")
            }
            guard let name = key as? String else { throw fail("header is not valid JSON (a key is not a string)") }
            guard names.insert(name).inserted else { throw fail("tensor '\(name)' appears twice in the header") }
            if name == "__metadata__" {
                guard let pairs = value as? [String: Any] else { throw fail("__metadata__ is not an object") }
                for (key, item) in pairs {
                    guard let text = item as? String else { throw fail("__metadata__[\(key)] is not a string") }
                    metadata[key] = text
                }
                continue
            }
            entries.append(try Self.entry(name, value, dataStart: dataStart, dataSize: dataSize, fail: fail))
        }
        entries.sort { ($0.range.lowerBound, $0.range.upperBound) < ($1.range.lowerBound, $1.range.upperBound) }
        for (previous, next) in zip(entries, entries.dropFirst()) where next.range.lowerBound < previous.range.upperBound {
            throw fail("tensors '\(previous.name)' and '\(next.name)' overlap in the data area")
        }
        self.entries = entries
        self.metadata = metadata
        self.index = Dictionary(uniqueKeysWithValues: entries.enumerated().map { ($1.name, $0) })
    }

    public func entry(named name: String) -> SafeTensorsEntry? { index[name].map { entries[$0] } }

    /// One tensor's header entry, checked against the data area.
    private static func entry(_ name: String, _ value: Any, dataStart: Int, dataSize: Int,
                              fail: (String) -> SafeTensorsError) throws -> SafeTensorsEntry {
        guard let info = value as? [String: Any] else { throw fail("tensor '\(name)': entry is not an object") }
        guard let dtypeName = info["dtype"] as? String else { throw fail("tensor '\(name)': missing dtype") }
        guard let dtype = SafeTensorsDType.parse(dtypeName) else {
            throw fail("tensor '\(name)': unknown dtype '\(dtypeName)'")
        }
        guard let shapeArray = info["shape"] as? [Any] else { throw fail("tensor '\(name)': missing shape") }
        var shape: [Int] = []
        for dim in shapeArray {
            guard let d = Self.nonNegativeInt(dim) else { throw fail("tensor '\(name)': shape \(shapeArray) has a dimension that is negative, fractional or too large") }
            shape.append(d)
        }
        guard let offsets = info["data_offsets"] as? [Any], offsets.count == 2,
              let begin = Self.nonNegativeInt(offsets[0]), let end = Self.nonNegativeInt(offsets[1]) else {
            throw fail("tensor '\(name)': data_offsets must be two non-negative integers")
        }
        guard begin <= end, end <= dataSize else {
            throw fail("tensor '\(name)': data_offsets [\(begin), \(end)] lie outside the \(dataSize)-byte data area (truncated file?)")
        }
        guard let count = elementCount(shape),
              case (let expected, false) = count.multipliedReportingOverflow(by: dtype.byteSize),
              expected == end - begin else {
            throw fail("tensor '\(name)': shape \(shape) of \(dtype) needs a different byte length than data_offsets [\(begin), \(end)] give")
        }
        return SafeTensorsEntry(name: name, dtype: dtype, shape: shape, range: (dataStart + begin)..<(dataStart + end))
    }

    /// The raw little-endian bytes of a tensor, straight from the mapping.
    public func bytes(of entry: SafeTensorsEntry) -> UnsafeRawBufferPointer {
        file.slice(entry.range)!   // ranges were validated against the file in init
    }

    /// The members of the header's top-level object as (key, value) byte ranges, found without building
    /// any object. JSONSerialization turns 16 MB of `[0,0,...` into half a gigabyte of objects, so the
    /// structure every header has (members that are objects of strings and short arrays, or strings) is
    /// checked first, and each member is then parsed on its own.
    static func members(of json: UnsafeRawBufferPointer) throws -> [(key: Range<Int>, value: Range<Int>)] {
        let count = json.count
        var i = 0
        func skipSpace() { while i < count, [0x20, 0x09, 0x0A, 0x0D].contains(json[i]) { i += 1 } }
        func expect(_ byte: UInt8, _ what: String) throws {
            skipSpace()
            guard i < count, json[i] == byte else { throw FormatViolation("expected \(what) at byte \(i)") }
            i += 1
        }
        func skipString() throws {
            i += 1   // the opening quote
            while i < count {
                switch json[i] {
                case UInt8(ascii: "\\"): i += 2
                case UInt8(ascii: "\""): i += 1; return
                case 0..<0x20: throw FormatViolation("a control character inside a string at byte \(i)")
                default: i += 1
                }
            }
            throw FormatViolation("a string runs to the end")
        }

        func checkLength(from start: Int) throws {
            guard i - start <= maxMemberBytes else { throw FormatViolation("a member longer than \(maxMemberBytes) bytes") }
        }

        var members: [(key: Range<Int>, value: Range<Int>)] = []
        try expect(UInt8(ascii: "{"), "'{'")
        skipSpace()
        if i < count, json[i] == UInt8(ascii: "}") {
            i += 1
        } else {
            while true {
                skipSpace()
                guard i < count, json[i] == UInt8(ascii: "\"") else { throw FormatViolation("expected a key at byte \(i)") }
                let keyStart = i
                try skipString()
                let key = keyStart..<i
                try expect(UInt8(ascii: ":"), "':'")
                skipSpace()
                let valueStart = i
                // Open brackets of this value: true for an array, with its element count.
                var open: [(array: Bool, elements: Int)] = []
                scan: while i < count {
                    switch json[i] {
                    case UInt8(ascii: "\""):
                        try skipString()
                        continue scan
                    case UInt8(ascii: "{"), UInt8(ascii: "["):
                        // An entry is an object holding arrays of numbers: nothing nests deeper.
                        let array = json[i] == UInt8(ascii: "[")
                        guard open.isEmpty || (array && !open[open.count - 1].array) else {
                            throw FormatViolation("nested deeper than a tensor entry at byte \(i)")
                        }
                        open.append((array, 1))
                    case UInt8(ascii: "}"), UInt8(ascii: "]"):
                        if open.isEmpty { break scan }
                        open.removeLast()
                        if open.isEmpty { i += 1; break scan }
                    case UInt8(ascii: ","):
                        if open.isEmpty { break scan }
                        if open[open.count - 1].array {
                            open[open.count - 1].elements += 1
                            guard open[open.count - 1].elements <= maxArrayElements else {
                                throw FormatViolation("an array longer than \(maxArrayElements) elements at byte \(i)")
                            }
                        }
                    default:
                        break
                    }
                    i += 1
                    try checkLength(from: valueStart)
                }
                // Again at the end: a value that ends right after a string (or a closing bracket) left the
                // loop without reaching the check above.
                try checkLength(from: valueStart)
                guard open.isEmpty, i > valueStart else { throw FormatViolation("a value is cut short at byte \(i)") }
                members.append((key, valueStart..<i))
                skipSpace()
                guard i < count else { throw FormatViolation("the object is not closed") }
                if json[i] == UInt8(ascii: "}") { i += 1; break }
                try expect(UInt8(ascii: ","), "',' or '}'")
            }
        }
        skipSpace()
        guard i == count else { throw FormatViolation("\(count - i) bytes follow the object") }
        return members
    }

    private static func nonNegativeInt(_ value: Any) -> Int? {
        if let number = value as? NSNumber {
            // Booleans bridge to NSNumber too; they are not dimensions.
            if String(cString: number.objCType) == "c" { return nil }
            let double = number.doubleValue
            guard double >= 0, double <= 9.0e15, double == double.rounded() else { return nil }
            return number.intValue
        }
        return nil
    }
}
