// MARK: - One generation as a JSON record
//
// What `blip2 caption/ask/chat --json` print, one object per line, and what `blip2 serve` answers with: one
// contract for both. Field names are public (README, "Generation options"; docs/SERVER.md).

public struct GenerationRecord: Encodable, Sendable {
    /// One of several returned sequences (beam search or sampling with `numReturnSequences > 1`).
    public struct Sequence: Encodable, Sendable {
        public let text: String
        public let tokenIds: [Int]
        /// The beam score; absent for sampled sequences.
        public let score: Double?
        enum CodingKeys: String, CodingKey { case text, tokenIds = "token_ids", score }
    }

    /// The image as the user named it (`-` for standard input).
    public var image: String?
    public var task: String
    public var prompt: String?
    public var question: String?
    /// The text of the first (best) sequence.
    public var text: String
    /// The new tokens of the first sequence, EOS included when it ended there.
    public var tokenIds: [Int]
    /// BOS and the prompt's ids, which follow the image embeddings.
    public var promptIds: [Int]
    /// Every returned sequence, when there is more than one.
    public var sequences: [Sequence]?
    public var timingsMs: StageTimings
    /// Chat only: oldest turns dropped to fit the context, and prompt ids reused from the KV cache.
    public var droppedTurns: Int?
    public var reusedPromptIds: Int?

    enum CodingKeys: String, CodingKey {
        case image, task, prompt, question, text, tokenIds = "token_ids", promptIds = "prompt_ids", sequences
        case timingsMs = "timings_ms", droppedTurns = "dropped_turns", reusedPromptIds = "reused_prompt_ids"
    }

    public init(task: Blip2Task, image: String?, prompt: String?, question: String? = nil, result: Pipeline.Result) {
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

    /// One chat answer.
    public init(image: String?, question: String, turn: ChatSession.Turn) {
        self.init(task: .chat, image: image, prompt: nil, question: question, result: turn.result)
        droppedTurns = turn.droppedTurns
        reusedPromptIds = turn.reusedIds
    }
}
