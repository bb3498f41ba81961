import ArgumentParser
import Blip2CommandLine
import Blip2Convert
import Blip2Core
import Blip2ModelFile
import Foundation

@main
struct Blip2Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "blip2-quantize",
        abstract: "Convert a Hugging Face BLIP-2-OPT checkpoint into one blip2 model file.",
        discussion: """
        Reads config.json, the safetensors weights (single or sharded; F32, F16 or BF16), \
        preprocessor_config.json and the tokenizer files from CHECKPOINT_DIR and writes one memory-mappable \
        model file. Linear weights take the --weights type; norms, biases and embeddings follow the default \
        precision policy (see docs/FORMAT.md) unless --override says otherwise. Prints a summary: totals per \
        component and per type and the tensors with the largest quantization error (--tensors: every tensor).

        Examples:
          blip2-quantize ./blip2-opt-2.7b -o blip2-opt-2.7b-q4.blip2 --weights q4
          blip2 imatrix blip2-opt-2.7b-q8.blip2 calibration/*.jpg -o opt-2.7b.imatrix
          blip2-quantize ./blip2-opt-2.7b -o blip2-opt-2.7b-q4k.blip2 --weights q4k \\
            --imatrix opt-2.7b.imatrix
          blip2-quantize ./ckpt -o m.blip2 --compress zstd \\
            --override 'language_model.*.fc2.weight=q8'
        """,
        version: Blip2Version.string
    )

    @Argument(help: "A Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer files).",
              completion: .directory)
    var checkpointDir: String

    @Option(name: [.customShort("o"), .long], help: "The model file to write (written to a temporary file beside it, then renamed).",
            completion: .file(extensions: ["blip2"]))
    var output: String

    @Option(name: .long, help: ArgumentHelp("Type of the linear weights: f32, f16, q8, q4, mixed (q4 language model, q8 vision and Q-Former), the super-block types q4k (4.5 bits), q3k (3.44), q6k (6.56), or q4k-m (q4k with the Q-Former and the language projection in q6k).",
                                            valueName: "type"),
            completion: .list(WeightPrecision.allCases.map(\.rawValue)))
    var weights: String = "q8"

    @Option(name: .long, help: ArgumentHelp("Per-tensor compression: none or zstd (smaller files, decompressed once at load).", valueName: "kind"),
            completion: .list(TensorCompression.allCases.map(\.description)))
    var compress: String = "none"

    @Option(name: .customLong("zstd-level"), parsing: .unconditional, help: "zstd level, 1 (fast) to 22 (small).")
    var zstdLevel: Int32 = 3

    @Option(name: .customLong("override"), help: ArgumentHelp("Store tensors matching GLOB as TYPE (f32, f16, q8, q4, q8p, q4p, q4k, q3k, q6k); repeatable, last match wins.", valueName: "GLOB=TYPE"))
    var overrides: [String] = []

    @Option(name: .long, help: ArgumentHelp("An importance matrix from `blip2 imatrix`: each quantized matrix is fitted to minimize its error weighted by how strongly the model drives each input.", valueName: "file"),
            completion: .file())
    var imatrix: String?

    @Option(name: [.customShort("t"), .long], parsing: .unconditional, help: "Worker threads (default: one per core).")
    var threads: Int?

    @Flag(name: .long, help: "List every tensor written (type, shape, bytes, error), not only the summary.")
    var tensors = false

    @Flag(name: .long, help: "Print the report as one JSON object on standard output (every tensor included).")
    var json = false

    func validate() throws {
        guard WeightPrecision(rawValue: weights) != nil else { throw invalidValue("--weights", weights, mustBe: WeightPrecision.names) }
        guard TensorCompression(name: compress) != nil else { throw invalidValue("--compress", compress, mustBe: "none or zstd") }
        guard (1...22).contains(zstdLevel) else { throw invalidValue("--zstd-level", zstdLevel, mustBe: "from 1 to 22") }
        if let threads, threads < 1 { throw invalidValue("--threads", threads, mustBe: "at least 1") }
        for text in overrides {
            do { _ = try PrecisionOverride(parsing: text) } catch { throw ValidationError("\(error)") }
        }
        if zstdLevel != 3, compress != "zstd" { printError("warning: --zstd-level has no effect without --compress zstd") }
        if tensors, json { printError("warning: --tensors has no effect with --json (the report lists every tensor)") }
    }

    func run() throws {
        var options = ConversionOptions()
        options.weights = WeightPrecision(rawValue: weights)!
        options.compression = TensorCompression(name: compress)!
        options.zstdLevel = zstdLevel
        options.overrides = try overrides.map { try PrecisionOverride(parsing: $0) }
        options.threads = threads ?? ProcessInfo.processInfo.activeProcessorCount
        if let imatrix {
            do {
                options.importance = try ImportanceMatrix(contentsOf: imatrix)
            } catch {
                printError("error: --imatrix: \(error)")
                throw ExitCode.failure
            }
            options.importanceFile = imatrix
            if options.weights == .f32 || options.weights == .f16 {
                printError("warning: --imatrix has no effect with --weights \(weights) (nothing is quantized)")
            }
        }

        if FileManager.default.fileExists(atPath: output + "/") {
            printError("error: --output \(output) is a directory; give a file name")
            throw ExitCode.failure
        }
        let cleanup = CleanupOnSignal(removing: ModelFileWriter.temporaryPath(for: output))
        defer { withExtendedLifetime(cleanup) {} }
        let bar = ProgressBar(title: "converting")
        let report: ConversionReport
        do {
            report = try Converter.convert(checkpoint: URL(fileURLWithPath: checkpointDir), output: output, options: options) { p in
                let fraction = p.bytesTotal > 0 ? Double(p.bytesDone) / Double(p.bytesTotal) : 1
                bar.update(fraction: fraction, detail: "\(p.tensorIndex)/\(p.tensorCount) \(p.name)")
            }
        } catch {
            bar.finish()
            printError("error: \(error)")
            throw ExitCode.failure
        }
        bar.finish()
        if json {
            try printJSON(report)
        } else {
            print(Self.text(report, tensors: tensors).joined(separator: "\n"))
        }
    }

    static func text(_ report: ConversionReport, tensors: Bool) -> [String] {
        var lines: [String] = []
        if tensors { lines += TensorListing.table(report.tensors) + [""] }
        lines += TensorListing.summary(report.tensors)
        if !report.ignored.isEmpty { lines.append("") }
        for line in report.ignored { lines.append("ignored  \(line)") }
        lines.append("")
        lines.append("wrote \(report.output): \(formatBytes(report.fileBytes)) (\(report.weights), compression \(report.compression)) in \(String(format: "%.1f", report.seconds)) s")
        return lines
    }
}
