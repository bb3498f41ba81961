import ArgumentParser
import Blip2CommandLine
import Blip2Config
import Blip2Core
import Blip2Model
import Blip2ModelFile
import Blip2Tokenizer
import Foundation

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show a model file's format version, configs, tokenizer and tensor table.",
        discussion: """
        Examples:
          blip2 inspect model.blip2
          blip2 inspect model.blip2 --verify
          blip2 inspect model.blip2 --json | jq '.tensors[] | select(.type == "q4") | .name'
        """
    )

    @Argument(help: "A model file written by blip2-quantize.")
    var file: String

    @Flag(name: .long, help: "Print one JSON object on standard output.")
    var json = false

    @Flag(name: .long, help: "Check every tensor's CRC-32C against the directory; exits non-zero on a mismatch.")
    var verify = false

    func run() throws {
        let report: InspectReport
        do {
            report = try InspectReport.make(path: file, verify: verify)
        } catch {
            printError("error: \(error)")
            throw ExitCode.failure
        }
        if json {
            try printJSON(report)
        } else {
            report.printHuman()
        }
        if let verification = report.verify, !verification.failures.isEmpty {
            printError("error: \(verification.failures.count) tensor(s) fail their checksum: \(verification.failures.prefix(5).joined(separator: ", ")); the file is corrupt, convert it again")
            throw ExitCode.failure
        }
    }
}

/// What `blip2 inspect --json` prints. Field names are a public contract.
struct InspectReport: Encodable {
    struct Tensor: Encodable {
        let name: String
        let type: String
        let shape: [Int]
        let bytes: Int
        let storedBytes: Int
        let compression: String
        let error: Double?
        let offset: Int
        let checksum: String
        let component: String?
        let sourceDtype: String?
        let note: String?
        enum CodingKeys: String, CodingKey {
            case name, type, shape, bytes, storedBytes = "stored_bytes", compression, error, offset, checksum, component
            case sourceDtype = "source_dtype", note
        }
    }
    struct Totals: Encodable {
        var parameters = 0
        var bytes = 0
        var storedBytes = 0
        enum CodingKeys: String, CodingKey { case parameters, bytes, storedBytes = "stored_bytes" }
    }
    struct TokenizerSummary: Encodable {
        let vocabSize: Int
        let mergeCount: Int
        let addedTokens: [AddedToken]
        let imageTokenId: Int?
        let bosToken: String?
        let eosToken: String?
        enum CodingKeys: String, CodingKey {
            case vocabSize = "vocab_size", mergeCount = "merge_count", addedTokens = "added_tokens"
            case imageTokenId = "image_token_id", bosToken = "bos_token", eosToken = "eos_token"
        }
    }
    struct Verification: Encodable {
        let checked: Int
        let failures: [String]
    }

    let path: String
    let fileBytes: Int
    let formatVersion: Int
    let quantization: QuantizationProvenance?
    let config: Blip2Config
    let configJSON: JSONText
    let preprocessorConfig: JSONText?
    let generationConfig: JSONText?
    let tokenizer: TokenizerSummary?
    let tensors: [Tensor]
    let totals: [String: Totals]
    let verify: Verification?

    enum CodingKeys: String, CodingKey {
        case path, fileBytes = "file_bytes", formatVersion = "format_version", quantization
        case configJSON = "config", preprocessorConfig = "preprocessor_config", generationConfig = "generation_config"
        case tokenizer, tensors, totals, verify
    }

    static func make(path: String, verify: Bool) throws -> InspectReport {
        let file = try ModelFile(path: path, options: .init(decompressAtOpen: false))
        let config = try file.checkedConfig()
        let provenance = try? file.decode(QuantizationProvenance.self, section: MetadataSectionName.quantization)
        let tokenizer = try? file.decode(TokenizerData.self, section: MetadataSectionName.tokenizer)
        let manifest = try WeightManifest(config: config)
        var totals: [String: Totals] = [:]
        let tensors = file.tensors.map { record -> Tensor in
            let origin = provenance?.tensors[record.name]
            let component = origin?.component ?? manifest.spec(named: record.name)?.component.rawValue
            for key in [component ?? "other", "total"] {
                totals[key, default: Totals()].parameters += record.elementCount
                totals[key, default: Totals()].bytes += record.size
                totals[key, default: Totals()].storedBytes += record.storedSize
            }
            return Tensor(name: record.name, type: record.type.name, shape: record.shape, bytes: record.size,
                          storedBytes: record.storedSize, compression: record.compression.description, error: origin?.error,
                          offset: record.offset, checksum: String(format: "%08x", record.checksum), component: component,
                          sourceDtype: origin?.sourceDtype, note: origin?.note)
        }
        var verification: Verification?
        if verify {
            let bar = ProgressBar(title: "verifying")
            let failures = file.verifyAll { done, total in
                bar.update(fraction: total > 0 ? Double(done) / Double(total) : 1, detail: formatBytes(done))
            }
            bar.finish()
            verification = Verification(checked: file.tensors.count, failures: failures.map(\.name))
        }
        let summary = tokenizer.map { data in
            TokenizerSummary(vocabSize: data.vocab.count, mergeCount: data.merges.count, addedTokens: data.addedTokens,
                             imageTokenId: data.addedTokens.first { $0.content == (data.imageToken ?? "<image>") }?.id,
                             bosToken: data.bosToken, eosToken: data.eosToken)
        }
        return InspectReport(
            path: path, fileBytes: file.fileSize, formatVersion: Int(file.formatVersion), quantization: provenance.map {
                var copy = $0
                copy.tensors = [:]   // listed per tensor below
                return copy
            },
            config: config, configJSON: JSONText(file.section(named: MetadataSectionName.config)?.json ?? []),
            preprocessorConfig: file.section(named: MetadataSectionName.preprocessorConfig).map { JSONText($0.json) },
            generationConfig: file.section(named: MetadataSectionName.generationConfig).map { JSONText($0.json) },
            tokenizer: summary, tensors: tensors, totals: totals, verify: verification)
    }

    func printHuman() {
        let v = config.visionConfig, q = config.qformerConfig, t = config.textConfig
        print("model file  \(path) (\(formatBytes(fileBytes)))")
        if let quantization {
            print("format      version \(formatVersion), written by \(quantization.tool) \(quantization.toolVersion) from \(quantization.sourceDtypes.joined(separator: "/")); weights \(quantization.weights), compression \(quantization.compression)\(quantization.overrides.isEmpty ? "" : ", overrides \(quantization.overrides.joined(separator: " "))")")
        } else {
            print("format      version \(formatVersion)")
        }
        print("vision      \(v.numHiddenLayers) layers x \(v.hiddenSize), \(v.numAttentionHeads) heads, mlp \(v.intermediateSize), image \(v.imageSize)/\(v.patchSize), qkv_bias \(v.qkvBias)")
        print("qformer     \(q.numHiddenLayers) layers x \(q.hiddenSize), \(q.numAttentionHeads) heads, \(config.numQueryTokens) query tokens, cross-attention every \(q.crossAttentionFrequency)")
        print("language    OPT \(t.numHiddenLayers) layers x \(t.hiddenSize), \(t.numAttentionHeads) heads, ffn \(t.ffnDim), vocab \(t.vocabSize), eos \(t.eosTokenId.map(String.init) ?? "none"), tied head \(t.tieWordEmbeddings)")
        if let tokenizer {
            print("tokenizer   \(tokenizer.vocabSize) tokens + \(tokenizer.addedTokens.count) added, \(tokenizer.mergeCount) merges, <image> = \(tokenizer.imageTokenId.map(String.init) ?? "absent")")
        }
        print("")
        print("tensor".padding(toLength: 70, withPad: " ", startingAt: 0) + " type  " + "shape".padding(toLength: 20, withPad: " ", startingAt: 0) + "       bytes      stored  comp  rel.err")
        for tensor in tensors {
            let shape = "[" + tensor.shape.map(String.init).joined(separator: ", ") + "]"
            let error = tensor.error.map { String(format: "%.2e", $0) } ?? "-"
            print(tensor.name.padding(toLength: 70, withPad: " ", startingAt: 0) + " " + tensor.type.padding(toLength: 5, withPad: " ", startingAt: 0)
                  + " " + shape.padding(toLength: 20, withPad: " ", startingAt: 0) + " " + pad(formatBytes(tensor.bytes), 11) + " "
                  + pad(formatBytes(tensor.storedBytes), 11) + "  " + tensor.compression.padding(toLength: 4, withPad: " ", startingAt: 0) + "  " + error)
        }
        print("")
        for key in ["vision", "qformer", "language", "other", "total"] {
            guard let total = totals[key] else { continue }
            print("\(key.padding(toLength: 9, withPad: " ", startingAt: 0)) \(pad(formatCount(total.parameters), 15)) parameters  \(pad(formatBytes(total.bytes), 10)) at run time  \(pad(formatBytes(total.storedBytes), 10)) stored")
        }
        if let verify {
            print(verify.failures.isEmpty ? "verify    all \(verify.checked) checksums match" : "verify    \(verify.failures.count) of \(verify.checked) checksums FAIL")
        }
    }

    private func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s : String(repeating: " ", count: width - s.count) + s }
}

/// Embeds a stored JSON document as-is in the output.
struct JSONText: Encodable {
    let value: JSONValue
    init(_ bytes: [UInt8]) { value = (try? JSONDecoder().decode(JSONValue.self, from: Data(bytes))) ?? .null }
    func encode(to encoder: Encoder) throws { try value.encode(to: encoder) }
}
