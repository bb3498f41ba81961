import ArgumentParser
import Blip2CommandLine
import Blip2Core
import Blip2Compute
import Blip2Generation
import Blip2Models
import Blip2Pipeline
import Foundation

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure load time, memory and per-stage latency of model files on this machine.",
        discussion: """
        Every run decodes exactly --new-tokens tokens (EOS is held back), after one warm-up run. Decode speed is \
        compared with this machine's read bandwidth, measured by the same process: each new token reads every \
        language-model weight once, so bytes per token / bandwidth is the floor.

        --beams N times beam search over N beams, --batch N that many sampled sequences decoded together (each \
        value its own row); \
        either way one step gives every beam or sequence its next token and reads the weights once, and \
        "ms / token" is the time of one such step.

        Several models, thread counts, beam counts and batch sizes are measured one after the other and \
        reported in one table (one row each); with --json, one object per line each. What is being measured \
        is said on standard error.

        Examples:
          blip2 bench model.blip2
          blip2 bench q8.blip2 q4.blip2 -t 1,2
          blip2 bench q4.blip2 --beams 1,3,5
          blip2 bench q4.blip2 --batch 1,4
          blip2 bench model.blip2 --image photo.jpg --runs 5 --json > bench.json
        """
    )

    @Argument(help: ArgumentHelp("Model files written by blip2-quantize.", valueName: "model"))
    var models: [String] = []

    @Option(name: .long, help: "Image to caption (default: a synthetic 640x480 frame; image decode is then not timed).")
    var image: String?

    @Option(name: .long, parsing: .unconditional, help: "Measured runs after one warm-up run.")
    var runs: Int = 3

    @Option(name: [.customShort("n"), .customLong("new-tokens")], parsing: .unconditional, help: "Tokens generated per run.")
    var newTokens: Int = 20

    @Option(name: [.customShort("t"), .long], parsing: .unconditional, help: ArgumentHelp("Worker threads, or a comma-separated list to compare (default: one per core).", valueName: "n[,n...]"))
    var threads: CountList?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Beam search over this many beams, or a comma-separated list to compare (1: greedy).", valueName: "n[,n...]"))
    var beams: CountList?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Sampled sequences decoded together, or a comma-separated list to compare (1: greedy).", valueName: "n[,n...]"))
    var batch: CountList?

    @Option(name: .customLong("bandwidth-buffer"), parsing: .unconditional, help: ArgumentHelp("Megabytes streamed to measure read bandwidth; keep it well above the caches and below free memory.", valueName: "MB"))
    var bandwidthBuffer: Int = 1024

    @Flag(name: .long, help: "Print each measurement as one JSON object per line.")
    var json = false

    @Option(name: .long, help: "Also write the table as Markdown to this file.")
    var markdown: String?

    func validate() throws {
        guard !models.isEmpty else { throw ValidationError("give at least one model file") }
        if image == "-" { throw ValidationError("--image is decoded on every run; give it as a file, not standard input") }
        guard runs >= 1 else { throw invalidValue("--runs", runs, mustBe: "at least 1") }
        guard (1...(1 << 24)).contains(bandwidthBuffer) else { throw invalidValue("--bandwidth-buffer", bandwidthBuffer, mustBe: "between 1 and 16777216 (MB)") }
        guard newTokens >= 2 else { throw invalidValue("--new-tokens", newTokens, mustBe: "at least 2 (per-token time needs two tokens)") }
        if let beams, let bad = beams.values.first(where: { $0 > GenerationOptions.numBeamsLimit }) {
            throw invalidValue("--beams", bad, mustBe: "from 1 to \(GenerationOptions.numBeamsLimit)")
        }
        if let batch, let bad = batch.values.first(where: { $0 > LanguageSession.maxStepBatch }) {
            throw invalidValue("--batch", bad, mustBe: "from 1 to \(LanguageSession.maxStepBatch)")
        }
    }

    func run() throws {
        let threadCounts = threads?.values ?? [ProcessInfo.processInfo.activeProcessorCount]
        var reports: [BenchmarkReport] = []
        let decodes = (beams?.values ?? [1]).map { (beams: $0, batch: 1) }
            + (batch?.values ?? []).filter { $0 > 1 }.map { (beams: 1, batch: $0) }
        for model in models {
            for count in threadCounts {
              for decode in decodes {
                let compute = try makeComputeContext(threads: count)
                var settings = BenchmarkSettings()
                settings.image = image.map { URL(fileURLWithPath: $0) }
                settings.runs = runs
                settings.newTokens = newTokens
                settings.bandwidthBytes = bandwidthBuffer << 20
                settings.beams = decode.beams
                settings.batch = decode.batch
                let status = StatusLine(prefix: "bench \(model), \(count) thread\(count == 1 ? "" : "s")\(Self.decodeName(decode.beams, decode.batch).map { ", " + $0 } ?? "")")
                do {
                    let report = try Benchmark.run(modelPath: model, settings: settings, compute: compute) { status.show($0) }
                    status.finish()
                    reports.append(report)
                    if json { try printJSON(report) }
                } catch {
                    status.finish()
                    throw failure(error)
                }
              }
            }
        }
        let table = Self.markdown(reports)
        if !json { print(table, terminator: "") }
        if let markdown {
            do { try table.write(toFile: markdown, atomically: true, encoding: .utf8) } catch {
                printError("error: cannot write \(markdown): \(error.localizedDescription)")
                throw ExitCode.failure
            }
        }
    }

    /// One row per measurement (like llama-bench), medians in milliseconds, then the machine and, per
    /// model, what a decoded token reads.
    static func markdown(_ reports: [BenchmarkReport]) -> String {
        guard let first = reports.first else { return "" }
        let decodeTimed = reports.contains { $0.stagesMs.imageDecode != nil }
        let decodesNamed = reports.contains { $0.beams > 1 || $0.batch > 1 }
        var columns: [(String, TextTable.Alignment)] = [("model", .left), ("size", .right), ("weights", .left), ("threads", .right), ("kernel", .left)]
        if decodesNamed { columns.append(("decode", .left)) }
        columns += [("load", .right), ("peak RSS", .right)]
        if decodeTimed { columns.append(("image decode", .right)) }
        columns += [("preprocess", .right), ("vision", .right), ("Q-Former + proj.", .right), ("prefill", .right),
                    ("first token", .right), ("ms / token", .right), ("tokens / s", .right), ("caption", .right),
                    ("of bandwidth floor", .right)]
        var table = TextTable(columns)
        for r in reports {
            let s = r.stagesMs
            let weights = (r.model.weights ?? "?") + (r.model.compression.map { $0 == "none" ? "" : " + \($0)" } ?? "")
            var row: [String] = [r.model.path, formatBytes(r.model.fileBytes), weights, "\(r.threads)", r.kernel]
            if decodesNamed { row.append(decodeName(r.beams, r.batch) ?? "greedy") }
            row += [formatMilliseconds(r.loadMs), formatBytes(r.peakRSSBytes)]
            if decodeTimed { row.append(s.imageDecode.map { formatMilliseconds($0.median) } ?? "-") }
            row += [s.preprocess, s.vision, s.qformerProjection, s.prefill, s.timeToFirstToken, s.msPerToken].map { formatMilliseconds($0.median) }
            row += [String(format: "%.2f", r.tokensPerSecond), formatMilliseconds(s.caption.median),
                    String(format: "%.0f%%", r.bandwidthFraction * 100)]
            table.add(row)
        }
        let m = first.machine
        var lines = table.markdown()
        lines.append("")
        lines.append("Milliseconds, medians of \(first.runs) runs after a warm-up; \(first.newTokens) new tokens per caption\(decodesNamed ? " (ms / token: one decode step, a token for every beam or sequence)" : ""). Machine: \(m.cpu), \(m.architecture) (\(m.features.joined(separator: " "))), \(m.cores) cores, \(formatBytes(Int(m.memoryBytes))) memory; blip2 \(first.version).")
        for r in reports {
            let p = r.profile
            func share(_ s: BenchmarkReport.StageProfile) -> String {
                let total = s.productsMs + s.otherMs
                guard total > 0 else { return "-" }
                let attentionProducts = s.attentionProductsMs > 0
                    ? String(format: " (%.0f%% in its score and value products)", s.attentionProductsMs / total * 100) : ""
                return String(format: "%.0f%% products (%.0f%% quantizing their activations), %.0f%% other (attention %.0f%%",
                              s.productsMs / total * 100, s.quantizeMs / total * 100, s.otherMs / total * 100, s.attentionMs / total * 100)
                    + attentionProducts
                    + String(format: ", norms %.0f%%, GELU %.0f%%), %.1f GOP/s", s.normsMs / total * 100, s.geluMs / total * 100,
                             s.gigaOperationsPerSecond)
            }
            lines.append("\(r.model.path), \(r.threads) thread\(r.threads == 1 ? "" : "s")\(decodeName(r.beams, r.batch).map { ", " + $0 } ?? ""): vision \(share(p.vision)); Q-Former + projection \(share(p.qformerProjection)); prefill \(share(p.prefill)); decode \(share(p.decode)).")
        }
        var seen = Set<String>()
        for r in reports where seen.insert(r.model.path).inserted {
            let floor = Double(r.model.decodeBytesPerToken) / r.readBandwidthBytesPerSecond * 1000
            lines.append("\(r.model.path): decoding reads \(formatBytes(r.model.decodeBytesPerToken)) per token; at the \(String(format: "%.1f", r.readBandwidthBytesPerSecond / 1e9)) GB/s read bandwidth measured with \(r.threads) thread\(r.threads == 1 ? "" : "s"), the floor is \(formatMilliseconds(floor)) ms per token.")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// "3 beams", "batch 4", or nil for greedy search.
    static func decodeName(_ beams: Int, _ batch: Int) -> String? {
        beams > 1 ? "\(beams) beams" : batch > 1 ? "batch \(batch)" : nil
    }
}

/// `--threads 2` or `--threads 1,2,4` (and the same for --beams and --batch).
struct CountList: ExpressibleByArgument {
    let values: [Int]

    init?(argument: String) {
        let parts = argument.split(separator: ",", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? 0) >= 1 }) else { return nil }
        values = parts.map { $0! }
    }
}

/// Progress on standard error: one line rewritten in place on a terminal, one line per step elsewhere
/// (a log keeps them all).
final class StatusLine {
    private let prefix: String
    private let terminal = standardErrorIsTerminal
    private var shown = false

    init(prefix: String) { self.prefix = prefix }

    func show(_ step: String) {
        if terminal {
            FileHandle.standardError.write(Data("\r\u{1B}[K\(prefix): \(step)".utf8))
            shown = true
        } else {
            printError("\(prefix): \(step)")
        }
    }

    func finish() {
        if shown { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        shown = false
    }
}
