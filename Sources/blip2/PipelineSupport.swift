import ArgumentParser
import Blip2CommandLine
import Blip2Compute
import Blip2Core
import Blip2Generation
import Blip2Image
import Blip2ModelFile
import Blip2Pipeline
import Blip2Tokenizer
import Foundation

/// Options every command that loads a model to look at images shares.
struct ModelOptions: ParsableArguments {
    @Argument(help: "A model file written by blip2-quantize.")
    var model: String

    @Option(name: .customLong("max-pixels"), parsing: .unconditional, help: "Refuse images whose header declares more pixels than this.")
    var maxPixels: Int = ImageDecodeOptions().maxPixels

    func validate() throws {
        guard maxPixels > 0 else { throw invalidValue("--max-pixels", maxPixels, mustBe: "at least 1") }
    }

    /// The model on a compute context of `threads` threads (nil: one per core; `BLIP2_ISA` may force an
    /// instruction set).
    func load(threads: Int? = 1) throws -> Pipeline {
        var imageOptions = ImageDecodeOptions()
        imageOptions.maxPixels = maxPixels
        let compute = try makeComputeContext(threads: threads)
        do {
            return try Pipeline(modelPath: model, imageOptions: imageOptions, compute: compute)
        } catch {
            throw failure(error)
        }
    }
}

/// The model argument of commands that need only its tokenizer (the weights are not loaded).
struct TokenizerModelOptions: ParsableArguments {
    @Argument(help: "A model file written by blip2-quantize.")
    var model: String

    func loadTokenizer() throws -> any TextTokenizer {
        do {
            let file = try ModelFile(path: model, options: .init(decompressAtOpen: false))
            if file.section(named: MetadataSectionName.t5Tokenizer) != nil {
                return try T5Tokenizer(try file.decode(T5TokenizerData.self, section: MetadataSectionName.t5Tokenizer))
            }
            return try OPTTokenizer(try file.decode(TokenizerData.self, section: MetadataSectionName.tokenizer))
        } catch {
            throw failure(error)
        }
    }
}

/// The kernels `BLIP2_ISA` names (the best the CPU has when unset) on a pool of `threads` threads (nil: one
/// per core); a bad `BLIP2_ISA` is an error that says what to do. Every command that computes goes through here.
func makeComputeContext(threads: Int?) throws -> ComputeContext {
    do { return try ComputeContext.fromEnvironment(threads: threads ?? ProcessInfo.processInfo.activeProcessorCount) } catch {
        throw failure(error)
    }
}

// MARK: - Images named on the command line

/// What an image argument names: a file, or standard input for `-`.
struct ImageArgument {
    static let standardInput = "-"
    /// Messages say this for `-`.
    static let standardInputName = "standard input"

    let argument: String

    var isStandardInput: Bool { argument == Self.standardInput }

    func encode(with pipeline: Pipeline) throws -> EncodedImage {
        guard isStandardInput else { return try pipeline.encodeImage(contentsOf: URL(fileURLWithPath: argument)) }
        let data = try Self.readStandardInput(limit: pipeline.imageOptions.maxFileBytes)
        return try pipeline.encodeImage(data: data, name: Self.standardInputName)
    }

    func pixels(with pipeline: Pipeline) throws -> [Float] {
        var timings = StageTimings()
        guard isStandardInput else { return try pipeline.pixels(contentsOf: URL(fileURLWithPath: argument), timings: &timings) }
        let data = try Self.readStandardInput(limit: pipeline.imageOptions.maxFileBytes)
        return try pipeline.pixels(data: data, name: Self.standardInputName, timings: &timings)
    }

    /// All of standard input, refusing more than `limit` bytes without reading past it.
    static func readStandardInput(limit: Int) throws -> Data {
        var data = Data()
        while data.count <= limit {
            guard let chunk = try FileHandle.standardInput.read(upToCount: min(1 << 20, limit + 1 - data.count)), !chunk.isEmpty else { break }
            data.append(chunk)
        }
        guard data.count <= limit else { throw ImageError.fileTooLarge(path: standardInputName, bytes: data.count, limit: limit) }
        return data
    }
}

// MARK: - Errors in the command line's terms

/// Prints `error` on standard error, in flag names where the library speaks of its own settings, and
/// returns the exit code to throw.
func failure(_ error: Error) -> ExitCode {
    // Already reported (a usage error found after loading, such as the token limit).
    if let code = error as? ExitCode { return code }
    printError("error: \(describe(error))")
    return ExitCode.failure
}

/// The one token-limit rule of every command: the prompt and --max-new-tokens must fit the context. Checked
/// once, before an image is encoded; a value that does not fit is a usage error (64) that says how many new
/// tokens fit after this prompt. (Above `GenerationOptions.maxNewTokensLimit` too: the context refuses it
/// first, so the message is the same.) A --min-new-tokens above the limit is warned about, as transformers
/// warns: generation still stops at the limit.
func checkTokenLimit(_ pipeline: Pipeline, prompt: String?, options: GenerationOptions, given: GenerationOptionsGroup) throws {
    do {
        try pipeline.checkFits(promptIds: pipeline.promptIds(prompt), maxNewTokens: options.maxNewTokens)
    } catch let error as PipelineError where error.overflow != nil {
        printError("error: \(describe(error))")
        throw ExitCode.validationFailure
    }
    if options.minNewTokens > options.maxNewTokens {
        let limit = given.maxNewTokens == nil ? "the default --max-new-tokens here (\(options.maxNewTokens))" : "--max-new-tokens \(options.maxNewTokens)"
        printError("warning: --min-new-tokens \(options.minNewTokens) is above \(limit): generation still stops after \(options.maxNewTokens) tokens")
    }
}

func describe(_ error: Error) -> String {
    switch error {
    case ImageError.tooManyPixels(let name, let width, let height, let limit):
        return "\(name): the image declares \(width)x\(height) = \(width * height) pixels, over the --max-pixels limit of \(limit); shrink the image or raise --max-pixels"
    case ImageError.fileTooLarge(let name, _, let limit):
        return "\(name): more than \(limit) bytes (\(formatBytes(limit))), too large for an image"
    case let error as PipelineError where error.overflow != nil:
        let o = error.overflow!
        let fit = o.contextLimit - o.imageTokens - o.promptTokens
        guard o.promptFits else {
            return "the prompt is \(o.promptTokens) tokens; with \(o.imageTokens) image embeddings that is \(o.imageTokens + o.promptTokens), and not one new token fits the \(o.contextLimit)-token context: shorten it"
        }
        return invalidValue("--max-new-tokens", o.maxNewTokens, mustBe: "at most \(fit): after the \(o.promptTokens)-token prompt and \(o.imageTokens) image embeddings, \(fit) new tokens fit the \(o.contextLimit)-token context").message
    case GenerationError.nonFiniteLogit, GenerationError.noFiniteLogit:
        // Weights that decode to NaN or infinity are almost always a damaged file, which the checksums find.
        return "\(error): `blip2 inspect MODEL --verify` checks every tensor against its checksum and names the damaged ones"
    case GenerationError.nothingToSample(let step):
        return "no token can be sampled at step \(step): --no-repeat-ngram-size, --min-new-tokens or --repetition-penalty suppressed every token"
    default:
        return "\(error)"
    }
}

// MARK: - Printing generations

/// Writes text to standard output immediately (tokens appear as they are produced).
func writeOut(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}

/// Runs one generation for an image and prints it: streamed text, every returned sequence, or one JSON line.
/// With `echo`, text output starts with the prompt, as the reader sees the continuation follow it.
func runImageTask(pipeline: Pipeline, task: Blip2Task, image: ImageArgument, prompt: String?, question: String? = nil,
                  generation: GenerationOptionsGroup, json: Bool, label: Bool, echo: Bool = false, dumpLogits: String?) throws {
    if let dumpLogits { try checkOutputPath(dumpLogits, flag: "--dump-logits") }
    let stages = StageIndicator()
    defer { stages.clear() }
    stages.show("encoding the image")
    let encoded = try image.encode(with: pipeline)
    let options = try generation.options(for: task)
    let streaming = !json && options.streamsTokens
    let prefix = label ? "\(image.argument): " : ""
    // The label waits for the first text, so the stage line (on the same terminal) never overwrites it.
    var started = false
    func emit(_ text: String) {
        if !started {
            stages.clear()
            writeOut(prefix)
            started = true
        }
        writeOut(text)
    }
    stages.show(streaming ? "reading the prompt" : "generating")
    let result = try pipeline.generate(image: encoded, prompt: prompt, options: options, echo: echo && !json,
                                       onText: streaming ? emit : nil)
    stages.clear()
    if streaming { emit("") }
    if json {
        try printJSON(GenerationRecord(task: task, image: image.argument, prompt: prompt, question: question, result: result))
    } else if streaming {
        writeOut("\n")
    } else {
        for index in result.sequences.indices {
            writeOut(prefix + (echo ? pipeline.echoedText(result, sequence: index) : result.texts[index]) + "\n")
        }
    }
    if let dumpLogits {
        let tokens = result.sequences.first?.tokens ?? []
        let logits = try pipeline.stepLogits(image: encoded, promptIds: result.promptIds, tokens: tokens)
        try Numpy.write(logits, shape: [tokens.count, pipeline.model.vocabularySize], to: URL(fileURLWithPath: dumpLogits))
    }
}
