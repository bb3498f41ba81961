import Foundation

// MARK: - The generation settings as users name them
//
// One row per setting a user can give: its command-line flag, its field in request bodies, what values it
// takes, its default and its help. The command line and the server both read their settings through this
// table, so a new setting is one row and the two can never disagree on a name, a default or how a value is
// read. Ranges are checked once, by `GenerationOptions.validate(naming:)`, in the caller's names.

/// A value as a caller received it: typed text (a command-line argument, a multipart text part) or JSON.
public enum SettingInput: Sendable, Equatable {
    case text(String)
    case number(Double)
    case boolean(Bool)
    /// A JSON value of another kind (array, object); only its kind is named in the refusal.
    case unsupported(kind: String)
}

/// A value a setting could not read: `expected` says what it takes ("an integer", "true or false").
public struct SettingParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public let setting: GenerationOptions.Setting
    /// The value as given (JSON text for numbers, quoted for strings).
    public let given: String
    public let expected: String

    public var description: String { "\(setting.rawValue) = \(given): expected \(expected)" }
}

public struct GenerationSetting: Sendable {
    /// How values are read; the command line shows `flag` kinds as switches without a value.
    public enum Kind: Sendable, Equatable {
        case integer
        case number
        case flag
        /// An unsigned 64-bit integer (any sampler seed).
        case seed
        /// One of the words, or JSON true/false where `true`/`false` are among them.
        case choice([String])
    }

    public let setting: GenerationOptions.Setting
    /// The long command-line flag, with its dashes: `--max-new-tokens`.
    public let flag: String
    /// A one-letter flag where the command line has one (`-n`).
    public let shortFlag: Character?
    /// The field in request bodies: `max_new_tokens`.
    public let field: String
    public let kind: Kind
    /// What the setting does, one sentence, without its default.
    public let summary: String
    /// Where it has effect only with another setting (`--sample`, `--beams` above 1), said in the help.
    public let needs: String?
    /// Writes a read value into options.
    let assign: @Sendable (inout GenerationOptions, Value) -> Void
    /// The setting's value in options, as a user would type it (for defaults in help).
    let current: @Sendable (GenerationOptions) -> String

    /// A read value, of the kind the row declares.
    enum Value {
        case integer(Int), number(Double), flag(Bool), seed(UInt64), choice(String)
    }

    /// The library's default, as a user would type it.
    public var defaultValue: String { current(GenerationOptions()) }

    /// Help text: the summary, the default (taken from `GenerationOptions()` unless the caller knows better,
    /// e.g. a default that depends on the task) and what it needs.
    public func help(default given: String? = nil) -> String {
        var parts: [String] = []
        if kind != .flag { parts.append("default: \(given ?? defaultValue)") }
        if let needs { parts.append("needs \(needs)") }
        return parts.isEmpty ? "\(summary)." : "\(summary) (\(parts.joined(separator: "; ")))."
    }

    /// Reads `input` into `options`, or says what the setting expected.
    public func apply(_ input: SettingInput, to options: inout GenerationOptions) throws(SettingParseError) {
        assign(&options, try read(input))
    }

    private func read(_ input: SettingInput) throws(SettingParseError) -> Value {
        func refuse(_ expected: String) -> SettingParseError {
            let given: String
            switch input {
            case .text(let s): given = "\"\(s)\""
            // Whole numbers as written, however large (2^64 rather than 1.8446744073709552e+19).
            case .number(let n): given = n.isFinite && n == n.rounded() ? String(format: "%.0f", n) : String(n)
            case .boolean(let b): given = String(b)
            case .unsupported(let kind): given = "a JSON \(kind)"
            }
            return SettingParseError(setting: setting, given: given, expected: expected)
        }
        switch (kind, input) {
        case (.integer, .number(let n)) where n == n.rounded() && abs(n) < 1e15:
            return .integer(Int(n))
        case (.integer, .text(let s)):
            guard let n = Int(s.trimmingCharacters(in: .whitespaces)) else { throw refuse("an integer") }
            return .integer(n)
        case (.integer, _):
            throw refuse("an integer")
        case (.number, .number(let n)):
            return .number(n)
        case (.number, .text(let s)):
            guard let n = Double(s.trimmingCharacters(in: .whitespaces)) else { throw refuse("a number") }
            return .number(n)
        case (.number, _):
            throw refuse("a number")
        case (.flag, .boolean(let b)):
            return .flag(b)
        case (.flag, .text(let s)):
            switch s.trimmingCharacters(in: .whitespaces).lowercased() {
            case "true", "1", "on": return .flag(true)
            case "false", "0", "off", "": return .flag(false)
            default: throw refuse("true or false")
            }
        case (.flag, _):
            throw refuse("true or false")
        case (.seed, .number(let n)) where n >= 0 && n == n.rounded() && n < 0x1p53:
            return .seed(UInt64(n))
        case (.seed, .text(let s)):
            guard let n = UInt64(s.trimmingCharacters(in: .whitespaces)) else { throw refuse("an integer from 0 to \(UInt64.max)") }
            return .seed(n)
        case (.seed, _):
            // Numbers from 2^53 on are not exact as doubles: callers pass them as text.
            throw refuse("an integer from 0 to \(UInt64.max)")
        case (.choice(let words), .text(let s)) where words.contains(s):
            return .choice(s)
        case (.choice(let words), .boolean(let b)) where words.contains(String(b)):
            return .choice(String(b))
        case (.choice(let words), _):
            throw refuse(words.map { "\"\($0)\"" }.joined(separator: ", ").replacingLastComma(with: " or "))
        }
    }
}

private extension String {
    func replacingLastComma(with separator: String) -> String {
        guard let range = range(of: ", ", options: .backwards) else { return self }
        return replacingCharacters(in: range, with: separator)
    }
}

extension GenerationSetting {
    private static func integer(_ setting: GenerationOptions.Setting, _ flag: String, short: Character? = nil, _ field: String,
                                _ summary: String, needs: String? = nil, _ path: WritableKeyPath<GenerationOptions, Int> & Sendable) -> Self {
        Self(setting: setting, flag: flag, shortFlag: short, field: field, kind: .integer, summary: summary, needs: needs,
             assign: { if case .integer(let v) = $1 { $0[keyPath: path] = v } }, current: { String($0[keyPath: path]) })
    }

    private static func number(_ setting: GenerationOptions.Setting, _ flag: String, _ field: String, _ summary: String,
                               needs: String? = nil, _ path: WritableKeyPath<GenerationOptions, Double> & Sendable) -> Self {
        Self(setting: setting, flag: flag, shortFlag: nil, field: field, kind: .number, summary: summary, needs: needs,
             assign: { if case .number(let v) = $1 { $0[keyPath: path] = v } }, current: { String($0[keyPath: path]) })
    }

    public static let maxNewTokens = integer(.maxNewTokens, "--max-new-tokens", short: "n", "max_new_tokens",
                                             "Tokens to generate at most, EOS included", \.maxNewTokens)
    public static let minNewTokens = integer(.minNewTokens, "--min-new-tokens", "min_new_tokens",
                                             "Tokens to generate before EOS is allowed", \.minNewTokens)
    public static let numBeams = integer(.numBeams, "--beams", "beams",
                                         "Beam search with this many beams; 1: greedy search or sampling", \.numBeams)
    public static let lengthPenalty = number(.lengthPenalty, "--length-penalty", "length_penalty",
                                             "Beam search ranks by log-probability / length^penalty", needs: "--beams above 1", \.lengthPenalty)
    public static let earlyStopping = Self(
        setting: .earlyStopping, flag: "--early-stopping", shortFlag: nil, field: "early_stopping", kind: .choice(["true", "false", "never"]),
        summary: "Beam search stop rule, as transformers' early_stopping: true, false or never", needs: "--beams above 1",
        assign: { options, value in
            guard case .choice(let word) = value else { return }
            options.earlyStopping = word == "true" ? .always : word == "never" ? .never : .heuristic
        },
        current: { options in
            switch options.earlyStopping {
            case .always: return "true"
            case .heuristic: return "false"
            case .never: return "never"
            }
        })
    public static let noRepeatNgramSize = integer(.noRepeatNgramSize, "--no-repeat-ngram-size", "no_repeat_ngram_size",
                                                  "Never repeat an n-gram of this size; 0: off", \.noRepeatNgramSize)
    public static let numReturnSequences = integer(.numReturnSequences, "--num-return-sequences", "num_return_sequences",
                                                   "Sequences to return: at most --beams; several need --beams or --sample", \.numReturnSequences)
    public static let doSample = Self(
        setting: .doSample, flag: "--sample", shortFlag: nil, field: "sample", kind: .flag,
        summary: "Sample instead of taking the most likely token", needs: nil,
        assign: { if case .flag(let v) = $1 { $0.doSample = v } }, current: { String($0.doSample) })
    public static let temperature = number(.temperature, "--temperature", "temperature",
                                           "Sampling temperature, above 0", needs: "--sample", \.temperature)
    public static let topK = integer(.topK, "--top-k", "top_k", "Sample from the k most likely tokens; 0: all", needs: "--sample", \.topK)
    public static let topP = number(.topP, "--top-p", "top_p",
                                    "Sample from the smallest set of tokens with this much probability, in (0, 1]", needs: "--sample", \.topP)
    public static let seed = Self(
        setting: .seed, flag: "--seed", shortFlag: nil, field: "seed", kind: .seed,
        summary: "Random seed for sampling: same seed, same output", needs: "--sample",
        assign: { if case .seed(let v) = $1 { $0.seed = v } }, current: { String($0.seed) })
    public static let repetitionPenalty = number(.repetitionPenalty, "--repetition-penalty", "repetition_penalty",
                                                 "Penalise tokens already in the context; 1: off", \.repetitionPenalty)

    /// Every setting a user can give, in the order help lists them. (The model's EOS and padding ids are
    /// the model file's, not the user's.)
    public static let all: [GenerationSetting] = [
        maxNewTokens, minNewTokens, numBeams, lengthPenalty, earlyStopping, noRepeatNgramSize, numReturnSequences,
        doSample, temperature, topK, topP, seed, repetitionPenalty,
    ]

    /// The row of a setting; nil for those no user gives (`eosTokenId`, `padTokenId`).
    public static func row(_ setting: GenerationOptions.Setting) -> GenerationSetting? {
        all.first { $0.setting == setting }
    }

    /// The row whose request field is `field`.
    public static func row(field: String) -> GenerationSetting? {
        all.first { $0.field == field }
    }
}
