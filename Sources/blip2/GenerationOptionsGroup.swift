import ArgumentParser
import Blip2CommandLine
import Blip2Generation
import Blip2Pipeline
import Foundation

/// Decoding options shared by caption, ask and chat (and any command that generates text).
///
/// Values out of range are usage errors that name the flag. Options that would change nothing are
/// warned about on standard error, as transformers warns: the sampling options without `--sample` (they
/// never imply it; decoding stays greedy), the beam options without `--beams` above 1.
struct GenerationOptionsGroup: ParsableArguments {
    @Option(name: [.customShort("n"), .customLong("max-new-tokens")], parsing: .unconditional,
            help: "Tokens to generate at most (default: 20 for captions, 10 for answers).")
    var maxNewTokens: Int?

    @Option(name: .customLong("min-new-tokens"), parsing: .unconditional, help: "Tokens to generate before EOS is allowed.")
    var minNewTokens: Int = 0

    @Option(name: .long, parsing: .unconditional, help: "Beam search with this many beams (1: greedy search or sampling).")
    var beams: Int = 1

    @Option(name: .customLong("length-penalty"), parsing: .unconditional, help: "Beam search: score = log-probability / length^penalty (default: 1.0).")
    var lengthPenalty: Double?

    @Option(name: .customLong("early-stopping"), help: "Beam search stop rule, as in transformers (default: false).")
    var earlyStopping: EarlyStoppingArgument?

    @Option(name: .customLong("no-repeat-ngram-size"), parsing: .unconditional, help: "Never repeat an n-gram of this size (0: off).")
    var noRepeatNgramSize: Int = 0

    @Option(name: .customLong("num-return-sequences"), parsing: .unconditional, help: "Sequences to return (at most --beams; several need --beams or --sample).")
    var numReturnSequences: Int = 1

    @Flag(name: .long, help: "Sample instead of taking the most likely token.")
    var sample = false

    @Option(name: .long, parsing: .unconditional, help: "Sampling temperature, above 0 (default: 1.0; needs --sample).")
    var temperature: Double?

    @Option(name: .customLong("top-k"), parsing: .unconditional, help: "Sample from the k most likely tokens; 0: all (default: 50; needs --sample).")
    var topK: Int?

    @Option(name: .customLong("top-p"), parsing: .unconditional, help: "Sample from the smallest set of tokens with this much probability, in (0, 1] (default: 1.0; needs --sample).")
    var topP: Double?

    @Option(name: .long, parsing: .unconditional, help: "Random seed for sampling: same seed, same output (default: 0; needs --sample).")
    var seed: UInt64?

    @Option(name: .customLong("repetition-penalty"), parsing: .unconditional, help: "Penalise tokens already in the context (1: off).")
    var repetitionPenalty: Double = 1.0

    @Option(name: [.customShort("t"), .long], parsing: .unconditional, help: "Worker threads (default: one per core).")
    var threads: Int?

    /// The flag behind each generation setting, for messages.
    static func flag(_ setting: GenerationOptions.Setting) -> String {
        switch setting {
        case .maxNewTokens: return "--max-new-tokens"
        case .minNewTokens: return "--min-new-tokens"
        case .numBeams: return "--beams"
        case .lengthPenalty: return "--length-penalty"
        case .earlyStopping: return "--early-stopping"
        case .noRepeatNgramSize: return "--no-repeat-ngram-size"
        case .numReturnSequences: return "--num-return-sequences"
        case .doSample: return "--sample"
        case .temperature: return "--temperature"
        case .topK: return "--top-k"
        case .topP: return "--top-p"
        case .seed: return "--seed"
        case .repetitionPenalty: return "--repetition-penalty"
        case .eosTokenId: return "the model's eos_token_id"
        case .padTokenId: return "the model's pad_token_id"
        }
    }

    func validate() throws {
        if let threads, threads < 1 { throw invalidValue("--threads", threads, mustBe: "at least 1") }
        var checked = options(for: .caption)
        // A limit above the library's bound is left to checkTokenLimit, which says how many tokens fit.
        checked.maxNewTokens = min(checked.maxNewTokens, GenerationOptions.maxNewTokensLimit)
        try Self.check(checked)
        // Out-of-range sampling values are refused even without --sample: they are mistakes either way.
        // Temperature 0 is not, without --sample: it is how other tools ask for greedy decoding.
        if !sample {
            var probe = GenerationOptions()
            probe.doSample = true
            if let temperature, temperature != 0 { probe.temperature = temperature }
            if let topK { probe.topK = topK }
            if let topP { probe.topP = topP }
            try Self.check(probe)
        }
        for warning in warnings { printError("warning: \(warning)") }
    }


    /// Refuses options a command cannot honour because it prints one answer per input (chat).
    func requireOneSequence(_ reason: String) throws {
        guard numReturnSequences == 1 else {
            throw invalidValue("--num-return-sequences", numReturnSequences, mustBe: "1 here: \(reason)")
        }
    }

    /// Options given that change nothing with the others given.
    var warnings: [String] {
        var warnings: [String] = []
        if !sample {
            // --temperature 0 asks for greedy decoding, which is what happens.
            let given = [("--temperature", temperature.map { $0 != 0 } ?? false), ("--top-k", topK != nil), ("--top-p", topP != nil),
                         ("--seed", seed != nil)]
                .filter(\.1).map(\.0)
            if !given.isEmpty {
                warnings.append("\(given.joined(separator: ", ")) \(given.count == 1 ? "has" : "have") no effect without --sample (decoding is greedy)")
            }
        }
        if beams == 1 {
            let given = [("--length-penalty", lengthPenalty != nil), ("--early-stopping", earlyStopping != nil)].filter(\.1).map(\.0)
            if !given.isEmpty {
                warnings.append("\(given.joined(separator: ", ")) \(given.count == 1 ? "has" : "have") no effect without --beams above 1")
            }
        }
        return warnings
    }

    static func check(_ options: GenerationOptions) throws {
        do { try options.validate(naming: flag) } catch let GenerationError.invalidOption(name, value, requirement) {
            throw invalidValue(name, value, mustBe: requirement)
        }
    }

    func options(for task: Blip2Task) -> GenerationOptions {
        var o = GenerationOptions()
        o.maxNewTokens = maxNewTokens ?? task.defaultMaxNewTokens
        o.minNewTokens = minNewTokens
        o.numBeams = beams
        o.lengthPenalty = lengthPenalty ?? o.lengthPenalty
        o.earlyStopping = earlyStopping?.value ?? o.earlyStopping
        o.noRepeatNgramSize = noRepeatNgramSize
        o.numReturnSequences = numReturnSequences
        o.doSample = sample
        o.temperature = temperature ?? o.temperature
        o.topK = topK ?? o.topK
        o.topP = topP ?? o.topP
        o.seed = seed ?? o.seed
        o.repetitionPenalty = repetitionPenalty
        return o
    }
}

/// transformers' `early_stopping` values as typed on the command line.
enum EarlyStoppingArgument: String, ExpressibleByArgument, CaseIterable {
    case `true`, `false`, never

    var value: EarlyStopping {
        switch self {
        case .true: return .always
        case .false: return .heuristic
        case .never: return .never
        }
    }
}
