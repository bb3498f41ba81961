import ArgumentParser
import Blip2Generation
import Blip2Model
import Blip2Pipeline
import Blip2CommandLine
import Foundation

/// Decoding options shared by caption, ask and chat.
struct GenerationOptionsGroup: ParsableArguments {
    @Option(name: .customLong("max-new-tokens"), parsing: .unconditional, help: "Tokens to generate at most (default: 20 for captions, 10 for answers).")
    var maxNewTokens: Int?

    @Option(name: .customLong("min-new-tokens"), parsing: .unconditional, help: "Tokens to generate before EOS is allowed.")
    var minNewTokens: Int = 0

    @Option(name: .long, parsing: .unconditional, help: "Beam search with this many beams (1: greedy or sampling).")
    var beams: Int = 1

    @Option(name: .customLong("length-penalty"), parsing: .unconditional, help: "Beam score = log-probability / length^penalty.")
    var lengthPenalty: Double = 1.0

    @Option(name: .customLong("early-stopping"), help: "Beam search stop rule: true, false or never (as in transformers).")
    var earlyStopping: String = "false"

    @Option(name: .customLong("no-repeat-ngram-size"), parsing: .unconditional, help: "Never repeat an n-gram of this size (0: off).")
    var noRepeatNgramSize: Int = 0

    @Option(name: .customLong("num-return-sequences"), parsing: .unconditional, help: "Sequences to return (at most --beams when not sampling).")
    var numReturnSequences: Int = 1

    @Flag(name: .long, help: "Sample instead of taking the most likely token.")
    var sample = false

    @Option(name: .long, parsing: .unconditional, help: "Sampling temperature.")
    var temperature: Double = 1.0

    @Option(name: .customLong("top-k"), parsing: .unconditional, help: "Sample from the k most likely tokens (0: all).")
    var topK: Int = 50

    @Option(name: .customLong("top-p"), parsing: .unconditional, help: "Sample from the smallest set of tokens with this much probability.")
    var topP: Double = 1.0

    @Option(name: .long, parsing: .unconditional, help: "Random seed for sampling (same seed, same output).")
    var seed: UInt64 = 0

    @Option(name: .customLong("repetition-penalty"), parsing: .unconditional, help: "Penalise tokens already in the context (1: off).")
    var repetitionPenalty: Double = 1.0

    @Option(name: .long, parsing: .unconditional, help: "Worker threads (default: all cores).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    func validate() throws {
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        guard ["true", "false", "never"].contains(earlyStopping) else { throw ValidationError("--early-stopping must be true, false or never") }
        do { try options(for: .caption).validate() } catch { throw ValidationError("\(error)") }
    }

    func options(for task: Blip2Task) -> GenerationOptions {
        var o = GenerationOptions()
        o.maxNewTokens = maxNewTokens ?? task.defaultMaxNewTokens
        o.minNewTokens = minNewTokens
        o.numBeams = beams
        o.lengthPenalty = lengthPenalty
        o.earlyStopping = earlyStopping == "true" ? .always : earlyStopping == "never" ? .never : .heuristic
        o.noRepeatNgramSize = noRepeatNgramSize
        o.numReturnSequences = numReturnSequences
        o.doSample = sample
        o.temperature = temperature
        o.topK = topK
        o.topP = topP
        o.seed = seed
        o.repetitionPenalty = repetitionPenalty
        return o
    }

    /// Sizes the worker pool and selects the kernels (`BLIP2_ISA` may force an instruction set).
    func applyThreads() throws {
        MatMul.threads = threads
        do { try MatMul.configureFromEnvironment() } catch {
            printError("error: \(error)")
            throw ExitCode.failure
        }
    }
}

/// One line of `--json` output per image or answer. Field names are a public contract.
struct GenerationRecord: Encodable {
    struct Sequence: Encodable {
        let text: String
        let tokenIds: [Int]
        let score: Double?
        enum CodingKeys: String, CodingKey { case text, tokenIds = "token_ids", score }
    }
    var image: String?
    var task: String
    var prompt: String?
    var question: String?
    var text: String
    var tokenIds: [Int]
    var promptIds: [Int]
    var sequences: [Sequence]?
    var timingsMs: StageTimings
    var droppedTurns: Int?
    var reusedPromptIds: Int?

    enum CodingKeys: String, CodingKey {
        case image, task, prompt, question, text, tokenIds = "token_ids", promptIds = "prompt_ids", sequences
        case timingsMs = "timings_ms", droppedTurns = "dropped_turns", reusedPromptIds = "reused_prompt_ids"
    }

    init(task: Blip2Task, image: String?, prompt: String?, question: String? = nil, result: Blip2Pipeline.Result) {
        self.task = task.rawValue
        self.image = image
        self.prompt = prompt
        self.question = question
        text = result.text
        tokenIds = result.sequences.first?.tokens ?? []
        promptIds = result.promptIds
        sequences = result.sequences.count > 1
            ? zip(result.sequences, result.texts).map { Sequence(text: $1, tokenIds: $0.tokens, score: $0.score) } : nil
        timingsMs = result.timings
    }
}
