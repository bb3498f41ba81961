import ArgumentParser
import Blip2CommandLine
import Blip2Core
import Blip2Model
import Blip2Pipeline
import Foundation

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure load time, memory and per-stage latency of a model file on this machine.",
        discussion: """
        Every run decodes exactly --new-tokens tokens (EOS is held back), after one warm-up run. Decode speed is
        compared with this machine's read bandwidth, measured by the same process: each new token reads every
        language-model weight once, so bytes per token / bandwidth is the floor.

        Examples:
          blip2 bench model.blip2
          blip2 bench model.blip2 --image photo.jpg --runs 5 --json > bench.json
          blip2 bench model.blip2 --markdown bench.md
        """
    )

    @Argument(help: "A model file written by blip2-quantize.")
    var model: String

    @Option(name: .long, help: "Image to caption (default: a synthetic 640x480 frame; image decode is then not timed).")
    var image: String?

    @Option(name: .long, parsing: .unconditional, help: "Measured runs after one warm-up run.")
    var runs: Int = 3

    @Option(name: .customLong("new-tokens"), parsing: .unconditional, help: "Tokens generated per run.")
    var newTokens: Int = 20

    @Option(name: .long, parsing: .unconditional, help: "Worker threads (default: all cores).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    @Flag(name: .long, help: "Print the report as one JSON object.")
    var json = false

    @Option(name: .long, help: "Also write the report as a Markdown table to this file.")
    var markdown: String?

    func validate() throws {
        guard runs >= 1 else { throw ValidationError("--runs must be at least 1") }
        guard newTokens >= 2 else { throw ValidationError("--new-tokens must be at least 2 (per-token time needs two tokens)") }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
    }

    func run() throws {
        MatMul.threads = threads
        let kernel: KernelISA
        do { kernel = try MatMul.configureFromEnvironment() } catch {
            printError("error: \(error)")
            throw ExitCode.failure
        }
        var settings = BenchmarkSettings()
        settings.image = image.map { URL(fileURLWithPath: $0) }
        settings.runs = runs
        settings.newTokens = newTokens
        settings.threads = threads
        let report: BenchmarkReport
        do {
            report = try Benchmark.run(modelPath: model, settings: settings, kernel: kernel.rawValue) { step in
                if standardErrorIsTerminal { FileHandle.standardError.write(Data("\r\u{1B}[Kbench: \(step)".utf8)) }
            }
            if standardErrorIsTerminal { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        } catch {
            printError("error: \(error)")
            throw ExitCode.failure
        }
        if json { try printJSON(report) } else { print(Self.markdown(report)) }
        if let markdown {
            do { try Self.markdown(report).write(toFile: markdown, atomically: true, encoding: .utf8) } catch {
                printError("error: cannot write \(markdown): \(error.localizedDescription)")
                throw ExitCode.failure
            }
        }
    }

    static func markdown(_ r: BenchmarkReport) -> String {
        func ms(_ s: Spread?) -> String {
            guard let s else { return "| - | - | - |" }
            return String(format: "| %.1f | %.1f | %.1f |", s.min, s.median, s.max)
        }
        let s = r.stagesMs
        var lines = [
            "**\(URL(fileURLWithPath: r.model.path).lastPathComponent)**: \(formatBytes(r.model.fileBytes)) (weights \(r.model.weights ?? "?"), compression \(r.model.compression ?? "?")); "
                + r.model.componentBytes.sorted { $0.key < $1.key }.map { "\($0.key) \(formatBytes($0.value))" }.joined(separator: ", "),
            "",
            "Machine: \(r.machine.cpu), \(r.machine.architecture) (\(r.machine.features.joined(separator: " "))), \(r.machine.cores) cores, \(formatBytes(Int(r.machine.memoryBytes))) memory; \(r.threads) threads, kernel \(r.kernel).",
            "",
            "| stage (ms) | min | median | max |",
            "|---|---:|---:|---:|",
            "| image decode " + ms(s.imageDecode),
            "| preprocess " + ms(s.preprocess),
            "| vision " + ms(s.vision),
            "| Q-Former + projection " + ms(s.qformerProjection),
            "| prompt prefill " + ms(s.prefill),
            "| time to first token " + ms(s.timeToFirstToken),
            "| per generated token " + ms(s.msPerToken),
            "| full caption (\(r.newTokens) tokens) " + ms(s.caption),
            "",
            String(format: "Load %.1f ms; peak RSS %@; %.2f tokens/s; read bandwidth %.1f GB/s; decode reads %@ per token, floor %.1f ms: %.0f%% of the bandwidth limit.",
                   r.loadMs, formatBytes(r.peakRSSBytes), r.tokensPerSecond, r.readBandwidthBytesPerSecond / 1e9,
                   formatBytes(r.model.decodeBytesPerToken), Double(r.model.decodeBytesPerToken) / r.readBandwidthBytesPerSecond * 1000,
                   r.bandwidthFraction * 100),
        ]
        lines.append("")
        return lines.joined(separator: "\n")
    }
}
