import ArgumentParser
import Blip2CommandLine
import Blip2Generation
import Blip2Pipeline
import Foundation

/// Decoding options shared by caption, ask and chat (and any command that generates text).
///
/// Flags, help and how values are read come from the generation library's settings table, which the
/// server reads too. Values out of range are usage errors that name the flag. Options that would change
/// nothing are warned about on standard error, as transformers warns: the sampling options without
/// `--sample` (they never imply it; decoding stays greedy), the beam options without `--beams` above 1.
struct GenerationOptionsGroup: ParsableArguments {
    @Option(name: GenerationSetting.maxNewTokens.names, parsing: .unconditional,
            help: GenerationSetting.maxNewTokens.argumentHelp(default: "\(Blip2Task.caption.defaultMaxNewTokens) for captions, \(Blip2Task.question.defaultMaxNewTokens) for answers"))
    var maxNewTokens: String?

    @Option(name: GenerationSetting.minNewTokens.names, parsing: .unconditional, help: GenerationSetting.minNewTokens.argumentHelp())
    var minNewTokens: String?

    @Option(name: GenerationSetting.numBeams.names, parsing: .unconditional, help: GenerationSetting.numBeams.argumentHelp())
    var beams: String?

    @Option(name: GenerationSetting.lengthPenalty.names, parsing: .unconditional, help: GenerationSetting.lengthPenalty.argumentHelp())
    var lengthPenalty: String?

    @Option(name: GenerationSetting.earlyStopping.names, help: GenerationSetting.earlyStopping.argumentHelp())
    var earlyStopping: String?

    @Option(name: GenerationSetting.noRepeatNgramSize.names, parsing: .unconditional, help: GenerationSetting.noRepeatNgramSize.argumentHelp())
    var noRepeatNgramSize: String?

    @Option(name: GenerationSetting.numReturnSequences.names, parsing: .unconditional, help: GenerationSetting.numReturnSequences.argumentHelp())
    var numReturnSequences: String?

    @Flag(name: GenerationSetting.doSample.names, help: GenerationSetting.doSample.argumentHelp())
    var sample = false

    @Option(name: GenerationSetting.temperature.names, parsing: .unconditional, help: GenerationSetting.temperature.argumentHelp())
    var temperature: String?

    @Option(name: GenerationSetting.topK.names, parsing: .unconditional, help: GenerationSetting.topK.argumentHelp())
    var topK: String?

    @Option(name: GenerationSetting.topP.names, parsing: .unconditional, help: GenerationSetting.topP.argumentHelp())
    var topP: String?

    @Option(name: GenerationSetting.seed.names, parsing: .unconditional, help: GenerationSetting.seed.argumentHelp())
    var seed: String?

    @Option(name: GenerationSetting.repetitionPenalty.names, parsing: .unconditional, help: GenerationSetting.repetitionPenalty.argumentHelp())
    var repetitionPenalty: String?

    @Option(name: [.customShort("t"), .long], parsing: .unconditional, help: "Worker threads (default: one per core).")
    var threads: Int?

    /// Each setting given on the command line, with its row.
    var given: [(GenerationSetting, SettingInput)] {
        let typed: [(GenerationSetting, String?)] = [
            (.maxNewTokens, maxNewTokens), (.minNewTokens, minNewTokens), (.numBeams, beams), (.lengthPenalty, lengthPenalty),
            (.earlyStopping, earlyStopping), (.noRepeatNgramSize, noRepeatNgramSize), (.numReturnSequences, numReturnSequences),
            (.temperature, temperature), (.topK, topK), (.topP, topP), (.seed, seed), (.repetitionPenalty, repetitionPenalty),
        ]
        return typed.compactMap { row, text in text.map { (row, .text($0)) } } + (sample ? [(.doSample, .boolean(true))] : [])
    }

    /// The flag behind each generation setting, for messages.
    static func flag(_ setting: GenerationOptions.Setting) -> String {
        GenerationSetting.row(setting)?.flag ?? "the model's \(setting == .eosTokenId ? "eos_token_id" : "pad_token_id")"
    }

    func validate() throws {
        if let threads, threads < 1 { throw invalidValue("--threads", threads, mustBe: "at least 1") }
        var checked = try options(for: .caption)
        // A limit above the library's bound is left to checkTokenLimit, which says how many tokens fit.
        checked.maxNewTokens = min(checked.maxNewTokens, GenerationOptions.maxNewTokensLimit)
        try Self.check(checked)
        // Out-of-range sampling values are refused even without --sample: they are mistakes either way.
        // Temperature 0 is not, without --sample: it is how other tools ask for greedy decoding.
        if !sample {
            var probe = checked
            probe.doSample = true
            if isGreedyTemperature { probe.temperature = 1 }
            try Self.check(probe)
        }
        for warning in warnings { printError("warning: \(warning)") }
    }


    /// `--temperature 0` without `--sample`: how other tools ask for greedy decoding, which is what happens.
    private var isGreedyTemperature: Bool {
        !sample && temperature.flatMap { Double($0.trimmingCharacters(in: .whitespaces)) } == 0
    }

    /// Refuses options a command cannot honour because it prints one answer per input (chat).
    func requireOneSequence(_ reason: String) throws {
        let count = try options(for: .chat).numReturnSequences
        guard count == 1 else { throw invalidValue("--num-return-sequences", count, mustBe: "1 here: \(reason)") }
    }

    /// Options given that change nothing with the others given.
    var warnings: [String] {
        var warnings: [String] = []
        if !sample {
            // --temperature 0 asks for greedy decoding, which is what happens.
            let given = [("--temperature", temperature != nil && !isGreedyTemperature), ("--top-k", topK != nil), ("--top-p", topP != nil),
                         ("--seed", seed != nil)]
                .filter(\.1).map(\.0)
            if !given.isEmpty {
                warnings.append("\(given.joined(separator: ", ")) \(given.count == 1 ? "has" : "have") no effect without --sample (decoding is greedy)")
            }
        }
        if (try? options(for: .caption).numBeams) == 1 {
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

    /// The options given, over the library's defaults and the task's token limit.
    func options(for task: Blip2Task) throws -> GenerationOptions {
        var o = GenerationOptions()
        o.maxNewTokens = task.defaultMaxNewTokens
        for (row, input) in given {
            do { try row.apply(input, to: &o) } catch {
                throw invalidValue(row.flag, input.typed, mustBe: error.expected)
            }
        }
        return o
    }
}

extension GenerationSetting {
    /// The row's flags for the argument parser.
    var names: NameSpecification {
        var names: NameSpecification = [.customLong(String(flag.dropFirst(2)))]
        if let shortFlag { names = [.customShort(shortFlag), .customLong(String(flag.dropFirst(2)))] }
        return names
    }

    func argumentHelp(default given: String? = nil) -> ArgumentHelp {
        ArgumentHelp(help(default: given))
    }
}

extension SettingInput {
    /// The value as typed, for messages.
    var typed: String {
        switch self {
        case .text(let s): return s
        case .number(let n): return String(n)
        case .boolean(let b): return String(b)
        case .unsupported(let kind): return kind
        }
    }
}
