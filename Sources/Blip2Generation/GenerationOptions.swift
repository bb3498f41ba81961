// Decoding settings, named and defaulted as in transformers' GenerationConfig.

/// When beam search stops, as transformers' `early_stopping` decides it.
public enum EarlyStopping: String, Sendable, Equatable, CaseIterable {
    /// `early_stopping=False` (the default): stop once the best running beam, normalised by its current
    /// length, can no longer beat the worst kept hypothesis.
    case heuristic
    /// `early_stopping=True`: stop as soon as `numBeams` hypotheses are finished.
    case always
    /// `early_stopping="never"`: with a positive length penalty, assume a running beam could still grow to
    /// `maxNewTokens` before giving up on it (canonical beam search).
    case never
}

/// Settings for `Generator.generate`. Defaults are transformers' `GenerationConfig` defaults.
///
/// Sampling-only settings (`temperature`, `topK`, `topP`, `seed`) are ignored unless `doSample` is set, and
/// beam-only settings (`lengthPenalty`, `earlyStopping`) unless `numBeams > 1`, as in transformers.
public struct GenerationOptions: Sendable, Equatable {
    /// Upper bound on generated tokens (EOS included). transformers: `max_new_tokens`.
    public var maxNewTokens: Int = 20
    /// EOS is forbidden until this many tokens exist (no effect without `eosTokenId`). transformers: `min_new_tokens`.
    public var minNewTokens: Int = 0
    /// 1: greedy search or sampling; more: beam search (or beam sampling with `doSample`).
    public var numBeams: Int = 1
    /// Finished hypotheses are ranked by `sum of log-probs / generated_length ^ lengthPenalty`.
    public var lengthPenalty: Double = 1.0
    /// HF: False == .heuristic, True == .always, "never" == .never
    public var earlyStopping: EarlyStopping = .heuristic
    /// Forbids any n-gram of this size from occurring twice in the whole sequence (context ids included); 0: off.
    public var noRepeatNgramSize: Int = 0
    /// How many sequences to return: at most `numBeams` for beam search; any number when sampling.
    public var numReturnSequences: Int = 1
    /// Sample from the processed distribution instead of taking the most likely token.
    public var doSample: Bool = false
    /// Divides the logits before sampling (lower is more conservative). Must be positive.
    public var temperature: Double = 1.0
    /// Sampling keeps only the `topK` most likely tokens (ties with the last one included); 0: off.
    public var topK: Int = 50
    /// Sampling keeps the smallest set of most likely tokens whose probability reaches `topP`; 1: off.
    public var topP: Double = 1.0
    /// Seed of the sampler's own generator (see `Generator`): same seed, same tokens.
    public var seed: UInt64 = 0
    /// Scores of tokens already in the sequence (context ids included) are divided by this when positive and
    /// multiplied by it when negative; 1: off.
    public var repetitionPenalty: Double = 1.0
    /// Generation of a sequence ends when it produces this token (which is returned); nil: never.
    public var eosTokenId: Int?
    /// Accepted for parity with transformers, whose finished rows are padded with it. Results here are
    /// trimmed to each sequence's own tokens, so it never appears in them.
    public var padTokenId: Int?

    public init() {}

    /// Bounds that keep buffers (beams x sequence length, beams x vocabulary) to a sane size.
    public static let maxNewTokensLimit = 65_536
    public static let numBeamsLimit = 256

    /// The settings by name, for messages: `validate(naming:)` lets a command line say `--beams` where a
    /// library user reads `numBeams`.
    public enum Setting: String, Sendable, CaseIterable {
        case maxNewTokens, minNewTokens, numBeams, lengthPenalty, earlyStopping, noRepeatNgramSize
        case numReturnSequences, doSample, temperature, topK, topP, seed, repetitionPenalty, eosTokenId, padTokenId
    }

    /// Throws `GenerationError.invalidOption` naming the first setting transformers would reject (or that
    /// cannot mean anything), with what it must be. `naming` spells each setting in messages (default: the
    /// Swift property name).
    public func validate(naming: (Setting) -> String = { $0.rawValue }) throws {
        func fail(_ setting: Setting, _ value: CustomStringConvertible, _ requirement: String) throws -> Never {
            throw GenerationError.invalidOption(name: naming(setting), value: value.description, requirement: requirement)
        }
        if maxNewTokens < 1 { try fail(.maxNewTokens, maxNewTokens, "at least 1") }
        if maxNewTokens > Self.maxNewTokensLimit {
            try fail(.maxNewTokens, maxNewTokens, "at most \(Self.maxNewTokensLimit), far beyond any language model's context")
        }
        if minNewTokens < 0 { try fail(.minNewTokens, minNewTokens, "0 or more") }
        if numBeams < 1 { try fail(.numBeams, numBeams, "at least 1") }
        if numBeams > Self.numBeamsLimit { try fail(.numBeams, numBeams, "at most \(Self.numBeamsLimit)") }
        if !lengthPenalty.isFinite { try fail(.lengthPenalty, lengthPenalty, "a finite number") }
        if noRepeatNgramSize < 0 { try fail(.noRepeatNgramSize, noRepeatNgramSize, "0 (off) or more") }
        if numReturnSequences < 1 { try fail(.numReturnSequences, numReturnSequences, "at least 1") }
        if numBeams == 1 && !doSample && numReturnSequences > 1 {
            try fail(.numReturnSequences, numReturnSequences,
                     "1 for greedy search (it has only one result); for several, use \(naming(.numBeams)) above 1 or \(naming(.doSample))")
        }
        if numBeams > 1 && numReturnSequences > numBeams {
            try fail(.numReturnSequences, numReturnSequences, "at most \(naming(.numBeams)) (\(numBeams))")
        }
        if !(repetitionPenalty > 0 && repetitionPenalty.isFinite) {
            try fail(.repetitionPenalty, repetitionPenalty, "a positive finite number (1 is off)")
        }
        if let eos = eosTokenId, eos < 0 { try fail(.eosTokenId, eos, "a token id (0 or more)") }
        if let pad = padTokenId, pad < 0 { try fail(.padTokenId, pad, "a token id (0 or more)") }
        if doSample {
            if !(temperature > 0 && temperature.isFinite) {
                try fail(.temperature, temperature, "a positive finite number when sampling (for greedy decoding, leave \(naming(.doSample)) off)")
            }
            if topK < 0 { try fail(.topK, topK, "0 (off) or more") }
            if !(topP > 0 && topP <= 1) { try fail(.topP, topP, "in (0, 1]; 1 is off") }
        }
    }

    /// Whether tokens are final as soon as they are chosen, so text can be shown as it is generated: one
    /// sequence, decoded greedily or by sampling (beam search knows its best sequence only at the end).
    public var streamsTokens: Bool { numBeams == 1 && numReturnSequences == 1 }
}

/// Why generation could not run or continue.
public enum GenerationError: Error, CustomStringConvertible, Equatable {
    /// A setting is out of range; `requirement` says what it must be.
    case invalidOption(name: String, value: String, requirement: String)
    /// A context id is negative.
    case invalidContextToken(index: Int, id: Int)
    /// The model returned no logits.
    case emptyLogits
    /// The model's logits changed length between steps.
    case logitsSizeChanged(expected: Int, actual: Int, step: Int)
    /// The model returned NaN or +infinity.
    case nonFiniteLogit(step: Int, token: Int, value: Float)
    /// Every logit the model returned is -infinity.
    case noFiniteLogit(step: Int)
    /// Sampling found no token with a positive probability (every token was suppressed).
    case nothingToSample(step: Int)
    /// Beam search needs `2 * numBeams` candidates per step and the vocabulary is too small to supply them.
    case vocabularyTooSmall(vocabularySize: Int, numBeams: Int)
    /// The caller's `shouldStop` asked to end generation before this step.
    case cancelled(step: Int)

    public var description: String {
        switch self {
        case let .invalidOption(name, value, requirement):
            return "invalid generation option \(name) = \(value): it must be \(requirement)"
        case let .invalidContextToken(index, id):
            return "context id \(id) at position \(index) is negative; pass the token ids the tokenizer produced"
        case .emptyLogits:
            return "the language model returned no logits; check that the model loaded its output layer"
        case let .logitsSizeChanged(expected, actual, step):
            return "the language model returned \(actual) logits at step \(step) after \(expected) before; a decoder state must keep one vocabulary size"
        case let .nonFiniteLogit(step, token, value):
            return "the language model returned logit \(value) for token \(token) at step \(step); the model or its weights are broken"
        case let .noFiniteLogit(step):
            return "every logit the language model returned at step \(step) is -infinity; the model or its weights are broken"
        case let .nothingToSample(step):
            return "no token can be sampled at step \(step): the settings (noRepeatNgramSize, minNewTokens, repetitionPenalty) suppressed every token"
        case let .vocabularyTooSmall(vocabularySize, numBeams):
            return "beam search with \(numBeams) beams needs \(2 * numBeams) candidates per step, but the vocabulary has \(vocabularySize) tokens; use fewer beams"
        case let .cancelled(step):
            return "generation was cancelled before step \(step)"
        }
    }
}
