import Foundation
import Blip2Generation

// MARK: - Chat about one image
//
// The image is encoded once. Each turn's prompt is the history plus the new question; the KV cache keeps
// the longest prefix of ids the new prompt shares with what it already holds, so only the new part runs.

// @unchecked Sendable: a turn holds `turnLock` from start to end, so turns of one conversation asked from
// several threads (a server's concurrent requests) run one after another, in the order they took the lock.
public final class ChatSession: @unchecked Sendable {
    public let pipeline: Pipeline
    public let image: EncodedImage
    /// The turns so far (oldest first), as the next turn's prompt will see them.
    public var history: [(question: String, answer: String)] { historyLock.withLock { storedHistory } }
    private var storedHistory: [(question: String, answer: String)] = []
    private let historyLock = NSLock()
    private var state: SessionState?
    private let turnLock = NSLock()

    public init(pipeline: Pipeline, image: EncodedImage) {
        self.pipeline = pipeline
        self.image = image
    }

    public struct Turn: Sendable {
        public var result: Pipeline.Result
        /// Oldest turns dropped to fit the context, if any.
        public var droppedTurns: Int
        /// Prompt ids that were already in the KV cache and not recomputed.
        public var reusedIds: Int
    }

    public func ask(_ question: String, options: GenerationOptions, onText: ((String) -> Void)? = nil,
                    shouldStop: (() -> Bool)? = nil) throws -> Turn {
        turnLock.lock()
        defer { turnLock.unlock() }
        let (ids, dropped) = try pipeline.chatPrompt(history: history, question: question, maxNewTokens: options.maxNewTokens)
        var timings = StageTimings()
        let (working, context, shared) = try pipeline.model.isEncoderDecoder
            ? encoderDecoderTurn(ids, options: options, timings: &timings)
            : cachedTurn(ids, options: options, timings: &timings)
        let sequences = try pipeline.decode(from: working, contextIds: context, options: options,
                                            onText: onText, shouldStop: shouldStop, timings: &timings)
        timings.total = [timings.prefill, timings.generate].compactMap { $0 }.reduce(0, +)
        let texts = sequences.map { pipeline.tokenizer.decodeStripped($0.tokens) }
        historyLock.withLock {
            storedHistory = Array(storedHistory.dropFirst(dropped))
            storedHistory.append((question, texts.first ?? ""))
        }
        let result = Pipeline.Result(sequences: sequences, promptIds: ids, timings: timings, texts: texts)
        return Turn(result: result, droppedTurns: dropped, reusedIds: shared)
    }

    /// OPT: the cached state keeps the prefix this prompt shares with the last one and runs only the rest.
    private func cachedTurn(_ ids: [Int], options: GenerationOptions, timings: inout StageTimings) throws
        -> (state: any DecoderState, contextIds: [Int], reusedIds: Int) {
        let base: SessionState
        if let state {
            base = state
        } else {
            base = try pipeline.makeState(capacity: pipeline.contextLimit)
            try measure(&timings.prefill) { try pipeline.start(base, from: image, prompt: ids) }
        }
        var shared = 0
        while shared < min(base.ids.count, ids.count), base.ids[shared] == ids[shared] { shared += 1 }
        var promptMilliseconds: Double?
        try measure(&promptMilliseconds) {
            base.truncate(keepingIds: shared, imageTokens: pipeline.numQueryTokens)
            try base.feed(Array(ids[shared...]))
        }
        timings.prefill = (timings.prefill ?? 0) + (promptMilliseconds ?? 0)
        state = base
        // Beam search explores copies; greedy and sampling continue the cached state itself.
        return (options.numBeams > 1 ? try base.fork() : base, pipeline.contextIds(promptIds: ids), shared)
    }

    /// T5: the encoder reads the whole prompt in both directions, so nothing of the last turn's work carries over.
    private func encoderDecoderTurn(_ ids: [Int], options: GenerationOptions, timings: inout StageTimings) throws
        -> (state: any DecoderState, contextIds: [Int], reusedIds: Int) {
        let (state, context) = try measure(&timings.prefill) {
            try pipeline.startState(image: image, promptIds: ids, newTokens: options.maxNewTokens)
        }
        return (state, context, 0)
    }
}

extension Pipeline {
    /// The chat prompt's ids for `question` after `history`, dropping the oldest turns until it fits the
    /// context with `maxNewTokens` to generate; the current question is never cut.
    /// Returns the ids and how many turns were dropped.
    ///
    /// Each turn is tokenised once, newest first, and only until the context is full, so a long history
    /// costs no more than the turns that fit. Counting turn by turn gives the same ids as tokenising the
    /// joined prompt: every turn ends in `.` and the next begins with ` Question`, so the GPT-2 split (or
    /// T5's split at whitespace) always falls between them and no added token spans the two.
    public func chatPrompt(history: [(question: String, answer: String)], question: String,
                           maxNewTokens: Int) throws -> (ids: [Int], droppedTurns: Int) {
        // T5 generates in its decoder: only the encoder's input counts against the context.
        let budget = contextLimit - numQueryTokens - (model.isEncoderDecoder ? 0 : maxNewTokens)
        var tokens = promptIds(Prompts.question(question)).count
        // A turn in front of the prompt adds its own ids, and ` Question` replaces `Question` at the front.
        let next = Prompts.question("")
        let nextAlone = tokenizer.encode(next, addSpecialTokens: false).count
        var kept = 0
        while kept < history.count, tokens <= budget {
            let turn = history[history.count - 1 - kept]
            let added = tokenizer.encode(Prompts.turn(question: turn.question, answer: turn.answer) + " " + next, addSpecialTokens: false).count - nextAlone
            guard tokens + added <= budget else { break }
            tokens += added
            kept += 1
        }
        var dropped = history.count - kept
        var ids = promptIds(Prompts.chat(history: Array(history.dropFirst(dropped)), question: question))
        // Only a tokenizer that splits differently could make the count differ; the prompt must fit regardless.
        while numQueryTokens + ids.count > budget + numQueryTokens, dropped < history.count {
            dropped += 1
            ids = promptIds(Prompts.chat(history: Array(history.dropFirst(dropped)), question: question))
        }
        try checkFits(promptIds: ids, maxNewTokens: maxNewTokens)
        return (ids, dropped)
    }
}
