import ArgumentParser
import Blip2CommandLine
import Blip2ModelFile
import Foundation

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show a model file's format, configs, tokenizer and a summary of its tensors.",
        discussion: """
        The summary adds the tensors up per component and per type and lists those with the largest \
        quantization error; --tensors lists every tensor.

        Examples:
          blip2 inspect model.blip2
          blip2 inspect model.blip2 --verify --tensors
          blip2 inspect model.blip2 --json \\
            | jq '.tensors[] | select(.type == "q4p") | .name'
        """
    )

    @Argument(help: "A model file written by blip2-quantize.")
    var file: String

    @Flag(name: .long, help: "List every tensor: type, shape, bytes, compression, quantization error.")
    var tensors = false

    @Flag(name: .long, help: "Print one JSON object on standard output (every tensor included).")
    var json = false

    @Flag(name: .long, help: "Check every tensor's CRC-32C against the directory; exits non-zero on a mismatch.")
    var verify = false

    func validate() throws {
        if tensors, json { printError("warning: --tensors has no effect with --json (the object lists every tensor)") }
    }

    func run() throws {
        let report: InspectReport
        do {
            let bar = ProgressBar(title: "verifying")
            defer { bar.finish() }
            report = try InspectReport(path: file, verify: verify) { done, total in
                bar.update(fraction: total > 0 ? Double(done) / Double(total) : 1, detail: formatBytes(done))
            }
        } catch {
            throw failure(error)
        }
        if json {
            try printJSON(report)
        } else {
            print(Self.text(report, tensors: tensors).joined(separator: "\n"))
        }
        if let verification = report.verify, !verification.failures.isEmpty {
            printError("error: \(verification.failures.count) tensor(s) fail their checksum: \(verification.failures.prefix(5).joined(separator: ", ")); the file is corrupt, convert it again")
            throw ExitCode.failure
        }
    }

    static func text(_ report: InspectReport, tensors: Bool) -> [String] {
        let config = report.config
        let v = config.visionConfig, q = config.qformerConfig, t = config.textConfig
        var lines = ["model file  \(report.path) (\(formatBytes(report.fileBytes)))"]
        if let quantization = report.quantization {
            lines.append("format      version \(report.formatVersion), written by \(quantization.tool) \(quantization.toolVersion) from \(quantization.sourceDtypes.joined(separator: "/")); weights \(quantization.weights), compression \(quantization.compression)\(quantization.overrides.isEmpty ? "" : ", overrides \(quantization.overrides.joined(separator: " "))")")
        } else {
            lines.append("format      version \(report.formatVersion)")
        }
        lines.append("vision      \(v.numHiddenLayers) layers x \(v.hiddenSize), \(v.numAttentionHeads) heads, mlp \(v.intermediateSize), image \(v.imageSize)/\(v.patchSize), qkv_bias \(v.qkvBias)")
        lines.append("qformer     \(q.numHiddenLayers) layers x \(q.hiddenSize), \(q.numAttentionHeads) heads, \(config.numQueryTokens) query tokens, cross-attention every \(q.crossAttentionFrequency)")
        if let t5 = config.t5Config {
            lines.append("language    T5 encoder \(t5.numLayers) + decoder \(t5.decoderLayers) layers x \(t5.dModel), \(t5.numHeads) heads x \(t5.dKv), ff \(t5.dFf) \(t5.feedForwardProj), \(t5.relativeAttentionNumBuckets) relative buckets to \(t5.relativeAttentionMaxDistance), vocab \(t5.vocabSize), eos \(t5.eosTokenId.map(String.init) ?? "none"), tied head \(t5.tieWordEmbeddings), output scaled \(t5.scaleDecoderOutputs)")
        } else {
            lines.append("language    OPT \(t.numHiddenLayers) layers x \(t.hiddenSize), \(t.numAttentionHeads) heads, ffn \(t.ffnDim), vocab \(t.vocabSize), eos \(t.eosTokenId.map(String.init) ?? "none"), tied head \(t.tieWordEmbeddings)")
        }
        if let tokenizer = report.tokenizer {
            let model = config.t5Config == nil ? "\(tokenizer.mergeCount) merges" : "SentencePiece Unigram"
            lines.append("tokenizer   \(tokenizer.vocabSize) tokens + \(tokenizer.addedTokens.count) added, \(model), <image> = \(tokenizer.imageTokenId.map(String.init) ?? "absent")")
        }
        if let verify = report.verify {
            lines.append(verify.failures.isEmpty ? "verify      all \(verify.checked) checksums match" : "verify      \(verify.failures.count) of \(verify.checked) checksums FAIL")
        }
        lines.append("")
        if tensors {
            lines += TensorListing.table(report.tensors)
            lines.append("")
        }
        lines += TensorListing.summary(report.tensors)
        if !tensors { lines += ["", "(\(report.tensors.count) tensors; --tensors lists them)"] }
        return lines
    }
}
