import Blip2Configs
import Blip2Core
import Blip2ModelFile
import Blip2Tokenizer
import Foundation

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
        } ?? Self.t5TokenizerSummary(file)
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

extension InspectReport {
    /// A T5 model's SentencePiece Unigram tokenizer: its pieces (no merges) and added tokens.
    static func t5TokenizerSummary(_ file: ModelFile) -> TokenizerSummary? {
        guard let data = try? file.decode(T5TokenizerData.self, section: MetadataSectionName.t5Tokenizer),
              let tokenizer = try? T5Tokenizer(data) else { return nil }
        let added = Set(tokenizer.addedTokens.map(\.id))
        return TokenizerSummary(vocabSize: (0..<tokenizer.vocabularySize).filter { !added.contains($0) }.count, mergeCount: 0,
                                addedTokens: tokenizer.addedTokens, imageTokenId: tokenizer.imageTokenId, bosToken: nil,
                                eosToken: data.eosToken)
    }
}
