import Blip2Core
import Foundation

// MARK: - What `blip2 inspect` and `blip2-quantize` report about a model file
//
// Both describe the same tensors, so they share one row type, one way of adding them up and one ranking of
// quantization errors. JSON field names are a public contract (README, docs/FORMAT.md).

/// One tensor of a model file.
public struct TensorReport: Codable, Sendable, Equatable {
    /// The Hugging Face key.
    public var name: String
    /// `f32`, `f16`, `q8`, `q4`, ...
    public var type: String
    /// The logical shape, as in the checkpoint.
    public var shape: [Int]
    /// Bytes in memory at run time.
    public var bytes: Int
    /// Bytes in the file (less than `bytes` when compressed).
    public var storedBytes: Int
    /// `none` or `zstd`.
    public var compression: String
    /// Relative RMS error of the stored values against the checkpoint's; absent when unknown.
    public var error: Double?
    /// `vision`, `qformer` or `language`; absent when unknown.
    public var component: String?
    public var sourceDtype: String?
    /// Why the type differs from what the precision policy asked for, if it does.
    public var note: String?
    /// Where the tensor starts in the file and its CRC-32C (inspect only).
    public var offset: Int?
    public var checksum: String?
    /// Bytes at run time per parameter, in bits (panels' padding rows included: they are read too).
    public var bitsPerWeight: Double?

    enum CodingKeys: String, CodingKey {
        case name, type, shape, bytes, storedBytes = "stored_bytes", compression, error, offset, checksum, component
        case sourceDtype = "source_dtype", note, bitsPerWeight = "bits_per_weight"
    }

    public init(name: String, type: String, shape: [Int], bytes: Int, storedBytes: Int, compression: String,
                error: Double?, component: String?, sourceDtype: String?, note: String?, offset: Int? = nil,
                checksum: String? = nil) {
        self.name = name
        self.type = type
        self.shape = shape
        self.bytes = bytes
        self.storedBytes = storedBytes
        self.compression = compression
        self.error = error
        self.component = component
        self.sourceDtype = sourceDtype
        self.note = note
        self.offset = offset
        self.checksum = checksum
        let parameters = shape.reduce(1, *)
        bitsPerWeight = parameters > 0 ? Double(bytes * 8) / Double(parameters) : nil
    }

    public var parameters: Int { shape.reduce(1, *) }
}

/// Tensors added up: per component, per type or over the whole file.
public struct TensorTotals: Codable, Sendable, Equatable {
    public var tensors = 0
    public var parameters = 0
    public var bytes = 0
    public var storedBytes = 0
    /// The largest relative error among the counted tensors that have one.
    public var maxError: Double?

    enum CodingKeys: String, CodingKey {
        case tensors, parameters, bytes, storedBytes = "stored_bytes", maxError = "max_error", bitsPerWeight = "bits_per_weight"
    }

    public init() {}

    /// Run-time bits per parameter of the counted tensors.
    public var bitsPerWeight: Double? { parameters > 0 ? Double(bytes * 8) / Double(parameters) : nil }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        tensors = try c.decode(Int.self, forKey: .tensors)
        parameters = try c.decode(Int.self, forKey: .parameters)
        bytes = try c.decode(Int.self, forKey: .bytes)
        storedBytes = try c.decode(Int.self, forKey: .storedBytes)
        maxError = try c.decodeIfPresent(Double.self, forKey: .maxError)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(tensors, forKey: .tensors)
        try c.encode(parameters, forKey: .parameters)
        try c.encode(bytes, forKey: .bytes)
        try c.encode(storedBytes, forKey: .storedBytes)
        try c.encodeIfPresent(maxError, forKey: .maxError)
        try c.encodeIfPresent(bitsPerWeight, forKey: .bitsPerWeight)
    }

    public mutating func add(_ tensor: TensorReport) {
        tensors += 1
        parameters += tensor.parameters
        bytes += tensor.bytes
        storedBytes += tensor.storedBytes
        if let error = tensor.error { maxError = max(maxError ?? error, error) }
    }

    /// The key every tally holds for all tensors together.
    public static let allKey = "total"
    /// The component key of tensors with no known component.
    public static let otherKey = "other"

    /// Totals per component (`vision`, `qformer`, `language`, `other` when unknown) and `total`.
    public static func byComponent(_ tensors: [TensorReport]) -> [String: TensorTotals] {
        tally(tensors) { $0.component ?? otherKey }
    }

    /// Totals per stored type and `total`.
    public static func byType(_ tensors: [TensorReport]) -> [String: TensorTotals] {
        tally(tensors) { $0.type }
    }

    static func tally(_ tensors: [TensorReport], key: (TensorReport) -> String) -> [String: TensorTotals] {
        var totals: [String: TensorTotals] = [:]
        for tensor in tensors {
            totals[key(tensor), default: TensorTotals()].add(tensor)
            totals[allKey, default: TensorTotals()].add(tensor)
        }
        return totals
    }

    /// The `count` tensors with the largest relative error (those without error, or with none, left out),
    /// largest first; ties keep file order.
    public static func worst(_ tensors: [TensorReport], count: Int) -> [TensorReport] {
        let measured = tensors.enumerated().filter { ($0.element.error ?? 0) > 0 }
        let ranked = measured.sorted { a, b in
            a.element.error! != b.element.error! ? a.element.error! > b.element.error! : a.offset < b.offset
        }
        return ranked.prefix(max(0, count)).map(\.element)
    }
}
