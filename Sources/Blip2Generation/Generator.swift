import Foundation

/// One generated continuation.
public struct GeneratedSequence: Sendable, Equatable {
    /// The new token ids, ending with EOS when the sequence produced it (padding never included).
    public var tokens: [Int]
    /// Beam search: the hypothesis score transformers reports as `sequences_scores` (sum of processed
    /// log-probabilities / generated_length ^ lengthPenalty, EOS counted). Greedy search and sampling: nil.
    public var score: Double?
    /// Whether the sequence ended by producing `eosTokenId` (rather than reaching `maxNewTokens`).
    public var finishedByEOS: Bool

    public init(tokens: [Int], score: Double?, finishedByEOS: Bool) {
        self.tokens = tokens
        self.score = score
        self.finishedByEOS = finishedByEOS
    }
}

/// Decoding strategies with the semantics of transformers 5.x `generate`: greedy search, multinomial
/// sampling, beam search and beam sampling.
///
/// Which strategy runs follows transformers: `numBeams == 1` gives greedy search (or sampling with
/// `doSample`), `numBeams > 1` beam search (or beam sampling with `doSample`).
///
/// Sampling draws from the processed distribution with `SamplingRandom` (xoshiro256** seeded through
/// SplitMix64 from `options.seed`; sequence `i` uses stream `i`). The same seed gives the same tokens;
/// torch's random stream cannot be reproduced, so sampled tokens differ from transformers' while following
/// the same distribution. Beam sampling draws `2 * numBeams` candidates without replacement; when fewer
/// have a positive probability, the rest are the most likely zero-probability ones (torch picks those
/// arbitrarily).
public enum Generator {
    /// `contextIds`: the ids transformers sees as `input_ids` when it generates for BLIP-2 (num_query_tokens
    /// `<image>` ids, BOS, prompt ids): repetition_penalty and no_repeat_ngram_size count them too, and
    /// `state` must already have consumed them.
    ///
    /// `onToken` receives the tokens of the first returned sequence, in order. Greedy search and sampling
    /// call it as each token is chosen (before the model consumes it); beam search, whose best sequence is
    /// only known at the end, calls it once the search has finished.
    ///
    /// Returns `numReturnSequences` sequences; for beam search ordered by score, best first (a kept slot
    /// that no hypothesis ever reached, possible only when fewer than `numBeams` candidates have a finite
    /// score, comes back empty with score -1e9, as transformers returns it). `state` is advanced (and
    /// possibly forked) in the process; do not reuse it for another generation.
    ///
    /// `shouldStop` is asked before each step (a server's client may have gone away); when it answers true,
    /// generation ends with `GenerationError.cancelled` without running the model again.
    public static func generate<State: DecoderState>(from state: State, contextIds: [Int], options: GenerationOptions,
                                onToken: ((Int) -> Void)? = nil, shouldStop: (() -> Bool)? = nil) throws -> [GeneratedSequence] {
        try options.validate()
        for (index, id) in contextIds.enumerated() where id < 0 {
            throw GenerationError.invalidContextToken(index: index, id: id)
        }
        if options.numBeams > 1 {
            var search = try BeamSearch(state: state, contextIds: contextIds, options: options)
            let sequences = try search.run(shouldStop: shouldStop)
            if let onToken, let first = sequences.first { first.tokens.forEach(onToken) }
            return sequences
        }
        if options.numReturnSequences == 1 {
            var decoder = try SingleSequenceDecoder(contextIds: contextIds, options: options, stream: 0)
            return [try decoder.run(state, onToken: onToken, shouldStop: shouldStop)]
        }
        // Several samples: independent sequences (sequence i draws from stream i) stepping together, so each
        // step reads the weights once for all of them. The state given to us continues the last one.
        let count = options.numReturnSequences
        var states: [State] = []
        for _ in 0..<(count - 1) { states.append(try state.fork()) }
        states.append(state)
        var decoders: [SingleSequenceDecoder] = []
        for index in 0..<count {
            decoders.append(try SingleSequenceDecoder(contextIds: contextIds, options: options, stream: index))
        }
        var running: [State] = [], tokens: [Int] = []
        for step in 0..<options.maxNewTokens {
            running.removeAll(keepingCapacity: true)
            tokens.removeAll(keepingCapacity: true)
            for index in 0..<count where !decoders[index].isDone {
                let token = try decoders[index].choose(from: states[index].logits, step: step)
                if index == 0 { onToken?(token) }
                if !decoders[index].isDone {
                    running.append(states[index])
                    tokens.append(token)
                }
            }
            if running.isEmpty { break }
            if let shouldStop, shouldStop() { throw GenerationError.cancelled(step: step + 1) }
            try State.append(tokens, to: running)
        }
        return decoders.map { $0.result }
    }
}

// MARK: - Greedy search and sampling (transformers' `_sample`)

/// One sequence, one token per step: process the logits, take the argmax (the first on ties, as
/// `torch.argmax`) or sample, stop at EOS or after `maxNewTokens`.
struct SingleSequenceDecoder {
    private let options: GenerationOptions
    private let contextLength: Int
    /// Context then generated ids.
    private let sequence: Scratch<Int>
    private var length: Int
    private var scores: Scratch<Float>?
    private var probabilities: Scratch<Float>?
    private var processor: LogitsProcessor?
    private var random: SamplingRandom

    init(contextIds: [Int], options: GenerationOptions, stream: Int) throws {
        self.options = options
        contextLength = contextIds.count
        sequence = Scratch(count: contextIds.count + options.maxNewTokens, initialValue: 0)
        for (i, id) in contextIds.enumerated() { sequence[i] = id }
        length = contextIds.count
        random = SamplingRandom(seed: options.seed, stream: stream)
    }

    /// Whether the sequence has ended (EOS, or `maxNewTokens` chosen).
    private(set) var isDone = false
    private var finishedByEOS = false

    mutating func run<State: DecoderState>(_ state: State, onToken: ((Int) -> Void)?,
                                           shouldStop: (() -> Bool)? = nil) throws -> GeneratedSequence {
        for step in 0..<options.maxNewTokens {
            let token = try choose(from: state.logits, step: step)
            onToken?(token)
            if isDone { break }
            if let shouldStop, shouldStop() { throw GenerationError.cancelled(step: step + 1) }
            try state.append(token)
        }
        return result
    }

    /// Processes the logits of step `step`, chooses the next token and records it; the caller feeds it to
    /// the model unless the sequence `isDone`.
    mutating func choose(from logits: [Float], step: Int) throws -> Int {
        precondition(!isDone && step == length - contextLength, "one choice per step")
        let scores = try loadScores(logits, step: step)
        processor!.process(scores, sequence: UnsafeBufferPointer(sequence.prefix(length)))
        let token = options.doSample ? try sample(UnsafeBufferPointer(scores), step: step)
                                     : Self.argmax(UnsafeBufferPointer(scores))
        sequence[length] = token
        length += 1
        finishedByEOS = token == options.eosTokenId
        isDone = finishedByEOS || length - contextLength == options.maxNewTokens
        return token
    }

    var result: GeneratedSequence {
        GeneratedSequence(tokens: Array(sequence.buffer[contextLength..<length]), score: nil, finishedByEOS: finishedByEOS)
    }

    /// Copies the model's logits (torch copies them to float32 too), checking them on the way.
    private mutating func loadScores(_ logits: [Float], step: Int) throws -> UnsafeMutableBufferPointer<Float> {
        if scores == nil {
            guard !logits.isEmpty else { throw GenerationError.emptyLogits }
            scores = Scratch(count: logits.count, initialValue: 0)
            if options.doSample { probabilities = Scratch(count: logits.count, initialValue: 0) }
            processor = LogitsProcessor(options: options, vocabularySize: logits.count, contextLength: contextLength,
                                        maxSequenceLength: sequence.count, minTokensToKeep: 1)
        }
        let scores = self.scores!.buffer
        guard logits.count == scores.count else {
            throw GenerationError.logitsSizeChanged(expected: scores.count, actual: logits.count, step: step)
        }
        try logits.withUnsafeBufferPointer { try checkedCopy($0, into: scores, step: step) }
        return scores
    }

    static func argmax(_ scores: UnsafeBufferPointer<Float>) -> Int {
        var best = 0
        for i in 1..<scores.count where scores[i] > scores[best] { best = i }
        return best
    }

    /// `torch.multinomial(softmax(scores), 1)` with our generator.
    private mutating func sample(_ scores: UnsafeBufferPointer<Float>, step: Int) throws -> Int {
        let probabilities = self.probabilities!.buffer
        guard Softmax.max(scores) > -.infinity else { throw GenerationError.nothingToSample(step: step) }
        let total = Softmax.probabilities(scores, into: probabilities)
        guard total > 0 else { throw GenerationError.nothingToSample(step: step) }
        return Self.draw(UnsafeBufferPointer(probabilities), total: total, random: &random)
    }

    /// Index drawn with probability `weights[i] / total`: the first whose running sum exceeds a uniform
    /// draw times the total; never one of zero weight.
    static func draw(_ weights: UnsafeBufferPointer<Float>, total: Double, random: inout SamplingRandom) -> Int {
        let target = random.nextUnit() * total
        var cumulative = 0.0
        var lastPositive = -1
        for i in 0..<weights.count where weights[i] > 0 {
            cumulative += Double(weights[i])
            lastPositive = i
            if cumulative > target { return i }
        }
        return lastPositive  // rounding left the draw just past the end
    }
}

/// Copies logits, rejecting NaN and +infinity (a broken model) and rows with no finite value.
func checkedCopy(_ logits: UnsafeBufferPointer<Float>, into scores: UnsafeMutableBufferPointer<Float>, step: Int) throws {
    var anyFinite = false
    for i in 0..<logits.count {
        let value = logits[i]
        if value.isNaN || value == .infinity {
            throw GenerationError.nonFiniteLogit(step: step, token: i, value: value)
        }
        if value > -.infinity { anyFinite = true }
        scores[i] = value
    }
    if !anyFinite { throw GenerationError.noFiniteLogit(step: step) }
}
