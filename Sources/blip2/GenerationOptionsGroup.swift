import ArgumentParser
import Blip2Generation
import Blip2Pipeline
import Blip2CommandLine
import Foundation

/// Decoding options shared by caption, ask and chat.
struct GenerationOptionsGroup: ParsableArguments {
    @Option(name: .customLong("max-new-tokens"), help: "Tokens to generate at most (default: 20 for captions, 10 for answers).")
    var maxNewTokens: Int?

    @Option(name: .customLong("min-new-tokens"), help: "Tokens to generate before EOS is allowed.")
    var minNewTokens: Int = 0

    @Option(name: .long, help: "Beam search with this many beams (1: greedy or sampling).")
    var beams: Int = 1

    @Option(name: .customLong("length-penalty"), help: "Beam score = log-probability / length^penalty.")
    var lengthPenalty: Double = 1.0

    @Option(name: .customLong("early-stopping"), help: "Beam search stop rule: true, false or never (as in transformers).")
    var earlyStopping: String = "false"

    @Option(name: .customLong("no-repeat-ngram-size"), help: "Never repeat an n-gram of this size (0: off).")
    var noRepeatNgramSize: Int = 0

    @Option(name: .customLong("num-return-sequences"), help: "Sequences to return (at most --beams when not sampling).")
    var numReturnSequences: Int = 1

    @Flag(name: .long, help: "Sample instead of taking the most likely token.")
    var sample = false

    @Option(name: .long, help: "Sampling temperature.")
    var temperature: Double = 1.0

    @Option(name: .customLong("top-k"), help: "Sample from the k most likely tokens (0: all).")
    var topK: Int = 50

    @Option(name: .customLong("top-p"), help: "Sample from the smallest set of tokens with this much probability.")
    var topP: Double = 1.0

    @Option(name: .long, help: "Random seed for sampling (same seed, same output).")
    var seed: UInt64 = 0

    @Option(name: .customLong("repetition-penalty"), help: "Penalise tokens already in the context (1: off).")
    var repetitionPenalty: Double = 1.0

    @Option(name: .long, help: "Worker threads (default: all cores).")
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

}
