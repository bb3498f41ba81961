import ArgumentParser
import Blip2CommandLine
import Blip2Core
import Blip2Generation
import Blip2ModelFile
import Blip2Pipeline
import Foundation

struct ImatrixCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "imatrix",
        abstract: "Measure how strongly the model drives each input of every linear weight, for blip2-quantize --imatrix.",
        discussion: """
        Runs the model over calibration images, each with a caption (20 new tokens) and questions asked as \
        "Question: {q} Answer:" (10 new tokens each; --caption-tokens, --answer-tokens), greedily, and writes for every linear weight the mean of \
        x² of each input column and the number of tokens it was taken over (docs/FORMAT.md, "Importance \
        matrix files"). Any precision of a model works; the f16 or q8 file of the checkpoint to quantize is \
        the usual choice. Use images like the ones the model will see, and not the ones it is evaluated on.

        Default questions: \(CalibrationPrompts.defaultQuestions.map { "\"\($0)\"" }.joined(separator: ", ")).

        Examples:
          blip2 imatrix model-f16.blip2 calibration/*.jpg --output model.imatrix
          blip2 imatrix model-q8.blip2 a.jpg b.jpg -o model.imatrix --question "What is the man holding?"
          blip2 imatrix model-f16.blip2 calibration/*.jpg -o model.imatrix --questions-file questions.txt --json
        """
    )

    @OptionGroup var modelOptions: ModelOptions

    @Argument(help: "Calibration images (JPEG or PNG).")
    var images: [String] = []

    @Option(name: [.customShort("o"), .long], help: "The importance matrix file to write.")
    var output: String

    @Option(name: .customLong("question"), help: "A question asked of every image instead of the defaults (repeatable).")
    var questions: [String] = []

    @Option(name: .customLong("questions-file"), help: "Questions asked of every image instead of the defaults, one per line (with any --question).")
    var questionsFile: String?

    @Option(name: .customLong("caption-tokens"), help: "New tokens generated for each caption.")
    var captionTokens = Blip2Task.caption.defaultMaxNewTokens

    @Option(name: .customLong("answer-tokens"), help: "New tokens generated for each answer.")
    var answerTokens = Blip2Task.question.defaultMaxNewTokens

    @Option(name: [.customShort("t"), .long], parsing: .unconditional, help: "Worker threads (default: one per core).")
    var threads: Int?

    @Flag(name: .long, help: "A JSON summary on standard output.")
    var json = false

    static let maxQuestionsFileBytes = 1 << 20

    func validate() throws {
        guard !images.isEmpty else { throw ValidationError("give at least one calibration image") }
        if images.contains(ImageArgument.standardInput) { throw ValidationError("calibration images are files; standard input (-) is not read") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1 (got \(threads))") }
        for (flag, value) in [("--caption-tokens", captionTokens), ("--answer-tokens", answerTokens)] where value < 1 || value > GenerationOptions.maxNewTokensLimit {
            throw ValidationError("\(flag) must be from 1 to \(GenerationOptions.maxNewTokensLimit) (got \(value))")
        }
        if questions.contains(where: { $0.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty }) {
            throw ValidationError("--question is empty")
        }
    }

    /// --question values, then the file's non-blank lines; the defaults when neither is given.
    func calibrationPrompts() throws -> CalibrationPrompts {
        var asked = questions
        if let questionsFile {
            let data = try RegularFile.contents(questionsFile, maxBytes: Self.maxQuestionsFileBytes)
            guard let text = String(data: data, encoding: .utf8) else { throw FileError(path: questionsFile, "not UTF-8 text") }
            let lines = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            guard !lines.isEmpty else { throw FileError(path: questionsFile, "holds no questions (one per line)") }
            asked += lines
        }
        var prompts = asked.isEmpty ? CalibrationPrompts() : CalibrationPrompts(questions: asked)
        prompts.captionTokens = captionTokens
        prompts.answerTokens = answerTokens
        return prompts
    }

    struct Summary: Encodable {
        struct Run: Encodable {
            let image: String
            let prompt: String?
            let text: String
            let generatedTokens: Int
            enum CodingKeys: String, CodingKey { case image, prompt, text, generatedTokens = "generated_tokens" }
        }
        let output: String
        let model: String
        let images: Int
        let prompts: [String]
        let matrices: Int
        let columns: Int
        let bytes: Int
        let seconds: Double
        let runs: [Run]
    }

    /// Says why, and that nothing was written; the exit code to throw.
    private func abandoned(_ error: Error) -> ExitCode {
        if let overflow = (error as? PipelineError)?.overflow {
            let needed = overflow.imageTokens + overflow.promptTokens + overflow.maxNewTokens
            printError("error: a prompt of \(overflow.promptTokens) tokens, \(overflow.imageTokens) image embeddings and \(overflow.maxNewTokens) new tokens make \(needed), over the model's \(overflow.contextLimit)-token context: shorten the question or lower --caption-tokens / --answer-tokens")
        } else {
            printError("error: \(describe(error))")
        }
        printError("no importance matrix written")
        return ExitCode.failure
    }

    func run() throws {
        let prompts: CalibrationPrompts
        do {
            try checkOutputPath(output, flag: "--output")
            prompts = try calibrationPrompts()
        } catch {
            throw failure(error)
        }
        let pipeline = try modelOptions.load(threads: threads)
        let started = Date()
        let statistics: ActivationStatistics
        do { statistics = ActivationStatistics(weights: try ActivationStatistics.fittedWeights(of: pipeline.model.config)) } catch {
            throw failure(error)
        }
        let status = StatusLine(prefix: "imatrix")
        // Every prompt is checked against the context and every image read once before the model runs, so
        // a bad one late in a long run costs nothing.
        do {
            for (prompt, maxNewTokens) in prompts.prompts {
                try pipeline.checkFits(promptIds: pipeline.promptIds(prompt), maxNewTokens: maxNewTokens)
            }
            for image in images {
                var timings = StageTimings()
                _ = try pipeline.pixels(contentsOf: URL(fileURLWithPath: image), timings: &timings)
            }
        } catch {
            throw abandoned(error)
        }
        var runs: [Summary.Run] = []
        for (index, image) in images.enumerated() {
            let imageStarted = Date()
            status.show("image \(index + 1)/\(images.count) \(image)")
            let results: [CalibrationRun]
            do {
                var timings = StageTimings()
                let pixels = try pipeline.pixels(contentsOf: URL(fileURLWithPath: image), timings: &timings)
                results = try pipeline.calibrate(pixels: pixels, prompts: prompts, statistics: statistics)
            } catch {
                status.finish()
                throw abandoned(error)
            }
            status.finish()
            let generated = results.reduce(0) { $0 + $1.tokens.count }
            let caption = results.first?.text ?? ""
            printError("[\(index + 1)/\(images.count)] \(image): \"\(caption)\", \(results.count) prompts, \(generated) tokens generated, \(String(format: "%.1f", Date().timeIntervalSince(imageStarted))) s")
            runs += results.map { Summary.Run(image: image, prompt: $0.prompt, text: $0.text, generatedTokens: $0.tokens.count) }
        }
        let promptTexts = prompts.prompts.map { $0.prompt ?? "" }
        let matrix = statistics.matrix(source: .init(model: URL(fileURLWithPath: modelOptions.model).lastPathComponent,
                                                     images: images.count, prompts: promptTexts))
        let bytes: Int
        do {
            try matrix.write(to: output)
            bytes = try matrix.encoded().count
        } catch {
            throw failure(error)
        }
        let columns = matrix.entries.values.reduce(0) { $0 + $1.values.count }
        let seconds = Date().timeIntervalSince(started)
        printError("wrote \(output): \(matrix.entries.count) matrices, \(columns) columns, \(formatBytes(bytes)), \(String(format: "%.1f", seconds)) s")
        if json {
            try printJSON(Summary(output: output, model: modelOptions.model, images: images.count, prompts: promptTexts,
                                  matrices: matrix.entries.count, columns: columns, bytes: bytes, seconds: seconds, runs: runs))
        }
    }
}
