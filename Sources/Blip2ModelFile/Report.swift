import Blip2Config
import Blip2Core
import Blip2Tokenizer
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

// MARK: - blip2 inspect

/// What `blip2 inspect --json` prints.
public struct InspectReport: Encodable, Sendable {
    public struct TokenizerSummary: Encodable, Sendable {
        public let vocabSize: Int
        public let mergeCount: Int
        public let addedTokens: [AddedToken]
        public let imageTokenId: Int?
        public let bosToken: String?
        public let eosToken: String?
        enum CodingKeys: String, CodingKey {
            case vocabSize = "vocab_size", mergeCount = "merge_count", addedTokens = "added_tokens"
            case imageTokenId = "image_token_id", bosToken = "bos_token", eosToken = "eos_token"
        }
    }

    public struct Verification: Encodable, Sendable {
        public let checked: Int
        /// Names of the tensors whose bytes do not match their checksum.
        public let failures: [String]
    }

    public let path: String
    public let fileBytes: Int
    public let formatVersion: Int
    /// The `quantization` section as stored (absent in files not written by blip2-quantize).
    public let quantization: QuantizationProvenance?
    public let config: Blip2Config
    public let configJSON: JSONText
    public let preprocessorConfig: JSONText?
    public let generationConfig: JSONText?
    public let tokenizer: TokenizerSummary?
    public let tensors: [TensorReport]
    /// Per component and `total`.
    public let totals: [String: TensorTotals]
    /// Per stored type and `total`.
    public let totalsByType: [String: TensorTotals]
    public let verify: Verification?

    enum CodingKeys: String, CodingKey {
        case path, fileBytes = "file_bytes", formatVersion = "format_version", quantization
        case configJSON = "config", preprocessorConfig = "preprocessor_config", generationConfig = "generation_config"
        case tokenizer, tensors, totals, totalsByType = "totals_by_type", verify
    }

    /// Reads the file's directory and metadata (no tensor data unless `verify`, which checks every
    /// tensor's checksum and reports progress as bytes done of total).
    public init(path: String, verify: Bool, progress: ((_ done: Int, _ total: Int) -> Void)? = nil) throws {
        let file = try ModelFile(path: path, options: .init(decompressAtOpen: false))
        config = try file.checkedConfig()
        let provenance = try? file.decode(QuantizationProvenance.self, section: MetadataSectionName.quantization)
        let tokenizerData = try? file.decode(TokenizerData.self, section: MetadataSectionName.tokenizer)
        let manifest = try WeightManifest(config: config)
        tensors = file.tensors.map { record in
            let origin = provenance?.tensors[record.name]
            return TensorReport(name: record.name, type: record.type.name, shape: record.shape, bytes: record.size,
                                storedBytes: record.storedSize, compression: record.compression.description, error: origin?.error,
                                component: origin?.component ?? manifest.spec(named: record.name)?.component.rawValue,
                                sourceDtype: origin?.sourceDtype, note: origin?.note, offset: record.offset,
                                checksum: String(format: "%08x", record.checksum))
        }
        totals = TensorTotals.byComponent(tensors)
        totalsByType = TensorTotals.byType(tensors)
        if verify {
            let failures = file.verifyAll { done, total in progress?(done, total) }
            self.verify = Verification(checked: file.tensors.count, failures: failures.map(\.name))
        } else {
            self.verify = nil
        }
        tokenizer = tokenizerData.map { data in
            TokenizerSummary(vocabSize: data.vocab.count, mergeCount: data.merges.count, addedTokens: data.addedTokens,
                             imageTokenId: data.addedTokens.first { $0.content == (data.imageToken ?? "<image>") }?.id,
                             bosToken: data.bosToken, eosToken: data.eosToken)
        }
        self.path = path
        fileBytes = file.fileSize
        formatVersion = Int(file.formatVersion)
        quantization = provenance
        configJSON = JSONText(file.section(named: MetadataSectionName.config)?.json ?? [])
        preprocessorConfig = file.section(named: MetadataSectionName.preprocessorConfig).map { JSONText($0.json) }
        generationConfig = file.section(named: MetadataSectionName.generationConfig).map { JSONText($0.json) }
    }
}

/// A stored JSON document, embedded as-is in the output.
public struct JSONText: Encodable, Sendable {
    public let value: JSONValue
    public init(_ bytes: [UInt8]) { value = (try? JSONDecoder().decode(JSONValue.self, from: Data(bytes))) ?? .null }
    public func encode(to encoder: Encoder) throws { try value.encode(to: encoder) }
}
