import ArgumentParser
import Blip2CommandLine
import Blip2Convert
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
        precision policy (see docs/FORMAT.md) unless --override says otherwise.

        Examples:
          blip2-quantize ./blip2-opt-2.7b --output blip2-opt-2.7b-q4.blip2 --weights q4
          blip2-quantize ./ckpt --output m.blip2 --compress zstd --override 'language_model.*.fc2.weight=q8'
        """
    )

    @Argument(help: "A Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer files).")
    var checkpointDir: String

    @Option(name: .long, help: "The model file to write (written to a temporary file beside it, then renamed).")
    var output: String

    @Option(name: .long, help: "Type of the linear weights: f32, f16, q8, q4, or mixed (q4 language model, q8 vision and Q-Former).")
    var weights: String = "q8"

    @Option(name: .long, help: "Per-tensor compression: none or zstd (smaller files, decompressed once at load).")
    var compress: String = "none"

    @Option(name: .customLong("zstd-level"), parsing: .unconditional, help: "zstd level, 1 (fast) to 19 (small).")
    var zstdLevel: Int32 = 3

    @Option(name: .customLong("override"), help: ArgumentHelp("Store tensors matching GLOB as TYPE (f32, f16, q8, q4); repeatable, last match wins.", valueName: "GLOB=TYPE"))
    var overrides: [String] = []

    @Option(name: .long, parsing: .unconditional, help: "Worker threads (default: all cores).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    @Flag(name: .long, help: "Print the report as one JSON object on standard output.")
    var json = false

    func validate() throws {
        guard WeightPrecision(rawValue: weights) != nil else { throw ValidationError("--weights must be f32, f16, q8, q4 or mixed (got '\(weights)')") }
        guard TensorCompression(name: compress) != nil else { throw ValidationError("--compress must be none or zstd (got '\(compress)')") }
        guard (1...22).contains(zstdLevel) else { throw ValidationError("--zstd-level must be between 1 and 22") }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        for text in overrides {
            do { _ = try PrecisionOverride(parsing: text) } catch { throw ValidationError("\(error)") }
        }
    }

    func run() throws {
        var options = ConversionOptions()
        options.weights = WeightPrecision(rawValue: weights)!
        options.compression = TensorCompression(name: compress)!
        options.zstdLevel = zstdLevel
        options.overrides = try overrides.map { try PrecisionOverride(parsing: $0) }
        options.threads = threads

        let outputPath = URL(fileURLWithPath: output).path
        if FileManager.default.fileExists(atPath: outputPath + "/") {
            printError("error: --output \(outputPath) is a directory; give a file name")
            throw ExitCode.failure
        }
        let cleanup = CleanupOnSignal(removing: ModelFileWriter.temporaryPath(for: outputPath))
        defer { withExtendedLifetime(cleanup) {} }
        let bar = ProgressBar(title: "converting")
        let report: ConversionReport
        do {
            report = try Converter.convert(checkpoint: URL(fileURLWithPath: checkpointDir), output: outputPath, options: options) { p in
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
            printReport(report)
        }
    }

    private func printReport(_ report: ConversionReport) {
        print("tensor".padding(toLength: 72, withPad: " ", startingAt: 0) + " type  " + "shape".padding(toLength: 20, withPad: " ", startingAt: 0) + "      stored  rel.err")
        for t in report.tensors {
            let shape = "[" + t.shape.map(String.init).joined(separator: ", ") + "]"
            print(t.name.padding(toLength: 72, withPad: " ", startingAt: 0) + " " + t.type.padding(toLength: 5, withPad: " ", startingAt: 0) + " "
                  + shape.padding(toLength: 20, withPad: " ", startingAt: 0) + " " + formatBytes(t.storedBytes).leftPad(11)
                  + "  " + String(format: "%.2e", t.error) + (t.note.map { "  (\($0))" } ?? ""))
        }
        print("")
        for key in ["vision", "qformer", "language", "total"] {
            guard let totals = report.totals[key] else { continue }
            print("\(key.padding(toLength: 9, withPad: " ", startingAt: 0)) \(formatCount(totals.parameters).leftPad(15)) parameters  \(formatBytes(totals.bytes).leftPad(10)) at run time  \(formatBytes(totals.storedBytes).leftPad(10)) stored")
        }
        for line in report.ignored { print("ignored   \(line)") }
        print("wrote \(report.output): \(formatBytes(report.fileBytes)) (\(report.weights), compression \(report.compression)) in \(String(format: "%.1f", report.seconds)) s")
    }
}

extension String {
    func leftPad(_ width: Int) -> String { count >= width ? self : String(repeating: " ", count: width - count) + self }
}
