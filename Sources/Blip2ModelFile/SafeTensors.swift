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

public final class SafeTensorsFile: @unchecked Sendable {
    /// The format's own cap on the JSON header; larger claims are hostile or corrupt.
    public static let maxHeaderBytes = 100_000_000

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
            throw fail("header length \(headerLength) exceeds the format's limit of \(Self.maxHeaderBytes) bytes (corrupt or not safetensors)")
        }
        let dataStart = 8 + Int(headerLength)
        guard dataStart <= bytes.count else {
            throw fail("truncated: the header claims \(headerLength) bytes but the file has \(bytes.count - 8) after the length")
        }
        guard headerLength >= 2, bytes[8] == UInt8(ascii: "{") else {
            throw fail("header is not a JSON object")
        }
        let headerData = Data(bytes[8..<dataStart])
        let json: Any
        do { json = try JSONSerialization.jsonObject(with: headerData) } catch {
            throw fail("header is not valid JSON (\(error.localizedDescription))")
        }
        guard let object = json as? [String: Any] else { throw fail("header is not a JSON object") }

        let dataSize = bytes.count - dataStart
        var metadata: [String: String] = [:]
        var entries: [SafeTensorsEntry] = []
        for (name, value) in object {
            if name == "__metadata__" {
                guard let pairs = value as? [String: Any] else { throw fail("__metadata__ is not an object") }
                for (key, item) in pairs {
                    guard let text = item as? String else { throw fail("__metadata__[\(key)] is not a string") }
                    metadata[key] = text
                }
                continue
            }
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
            entries.append(SafeTensorsEntry(name: name, dtype: dtype, shape: shape, range: (dataStart + begin)..<(dataStart + end)))
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

    /// The raw little-endian bytes of a tensor, straight from the mapping.
    public func bytes(of entry: SafeTensorsEntry) -> UnsafeRawBufferPointer {
        file.slice(entry.range)!   // ranges were validated against the file in init
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
