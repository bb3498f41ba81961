// MARK: - The --json record
//
// `blip2 caption/ask/chat --json` print it and `blip2 serve` answers with it: one contract for both.

/// One line of `--json` output per image or answer. Field names are a public contract.
public struct GenerationRecord: Encodable, Sendable {
    public struct Sequence: Encodable, Sendable {
        public let text: String
        public let tokenIds: [Int]
        public let score: Double?
        enum CodingKeys: String, CodingKey { case text, tokenIds = "token_ids", score }
    }
    public var image: String?
    public var task: String
    public var prompt: String?
    public var question: String?
    public var text: String
    public var tokenIds: [Int]
    public var promptIds: [Int]
    public var sequences: [Sequence]?
    public var timingsMs: StageTimings
    public var droppedTurns: Int?
    public var reusedPromptIds: Int?

    enum CodingKeys: String, CodingKey {
        case image, task, prompt, question, text, tokenIds = "token_ids", promptIds = "prompt_ids", sequences
        case timingsMs = "timings_ms", droppedTurns = "dropped_turns", reusedPromptIds = "reused_prompt_ids"
    }

    public init(task: Blip2Task, image: String?, prompt: String?, question: String? = nil, result: Blip2Pipeline.Result) {
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
