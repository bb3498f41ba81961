import Foundation
import Testing
@testable import Blip2Generation

// MARK: - The fixture written by Tools/make_generation_cases.py

struct GenerationFixture: Decodable {
    struct Options: Decodable, Sendable {
        var max_new_tokens: Int
        var min_new_tokens: Int
        var num_beams: Int
        var length_penalty: Double
        var early_stopping: String
        var no_repeat_ngram_size: Int
        var num_return_sequences: Int
        var do_sample: Bool
        var temperature: Double
        var top_k: Int
        var top_p: Double
        var repetition_penalty: Double
        var eos_token_id: Int?
        var pad_token_id: Int?

        var generationOptions: GenerationOptions {
            var o = GenerationOptions()
            o.maxNewTokens = max_new_tokens
            o.minNewTokens = min_new_tokens
            o.numBeams = num_beams
            o.lengthPenalty = length_penalty
            o.earlyStopping = EarlyStopping(rawValue: early_stopping) ?? .heuristic
            o.noRepeatNgramSize = no_repeat_ngram_size
            o.numReturnSequences = num_return_sequences
            o.doSample = do_sample
            o.temperature = temperature
            o.topK = top_k
            o.topP = top_p
            o.repetitionPenalty = repetition_penalty
            o.eosTokenId = eos_token_id
            o.padTokenId = pad_token_id
            return o
        }
    }

    struct Expected: Decodable, Sendable {
        var tokens: [Int]
        var score: Double?
    }

    struct Case: Decodable, Sendable, CustomTestStringConvertible {
        var name: String
        var context: [Int]
        var options: Options
        /// Decoding steps transformers ran (one model call each).
        var steps: Int
        var expected: [Expected]
        var testDescription: String { name }
    }

    var transformers_version: String
    var vocab_size: Int
    var table_rows: Int
    var row_multipliers: [Int]
    var absent_token: Int
    var table: [[Float]]
    var cases: [Case]

    static let url = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/generation/cases.json")

    static let loaded: Result<GenerationFixture, Error> = Result {
        try JSONDecoder().decode(GenerationFixture.self, from: Data(contentsOf: url))
    }

    /// The cases, or none when the file is unreadable (`fixtureLoads` then fails and says why).
    static var cases: [Case] { (try? loaded.get())?.cases ?? [] }

    var model: TableModel {
        TableModel(vocabularySize: vocab_size, rows: table_rows, multipliers: row_multipliers,
                   absentToken: absent_token, table: table.flatMap { $0 })
    }
}

// MARK: - The toy language model, rebuilt

/// Logits are a table row picked by the last two ids and the sequence length (see the generator script).
struct TableModel: Sendable {
    var vocabularySize: Int
    var rows: Int
    var multipliers: [Int]
    var absentToken: Int
    var table: [Float]

    func logits(after sequence: [Int]) -> [Float] {
        let a = sequence[sequence.count - 1]
        let b = sequence.count >= 2 ? sequence[sequence.count - 2] : absentToken
        let row = (multipliers[0] * a + multipliers[1] * b + multipliers[2] * sequence.count) % rows
        return Array(table[(row * vocabularySize)..<((row + 1) * vocabularySize)])
    }
}

/// Counts what the generator asked of the states, across forks.
final class StateLog: @unchecked Sendable {
    var appends = 0
    var forks = 0
    /// Copies made into a spare state's memory instead of a new one.
    var reuses = 0
    /// The number of states of each batched append.
    var batches: [Int] = []
    var events: [String] = []
}

/// A `DecoderState` whose logits come from a closure of the consumed ids.
final class ScriptedState: DecoderState {
    let logitsFor: ([Int]) -> [Float]
    private(set) var ids: [Int]
    private(set) var logits: [Float]
    let log: StateLog

    init(ids: [Int], log: StateLog = StateLog(), logitsFor: @escaping ([Int]) -> [Float]) {
        self.ids = ids
        self.logitsFor = logitsFor
        self.log = log
        logits = logitsFor(ids)
    }

    convenience init(model: TableModel, context: [Int], log: StateLog = StateLog()) {
        self.init(ids: context, log: log, logitsFor: model.logits(after:))
    }

    func append(_ token: Int) throws {
        ids.append(token)
        log.appends += 1
        log.events.append("append \(token)")
        logits = logitsFor(ids)
    }

    func fork() throws -> ScriptedState {
        log.forks += 1
        return ScriptedState(ids: ids, log: log, logitsFor: logitsFor)
    }

    static func append(_ tokens: [Int], to states: [ScriptedState]) throws {
        precondition(Set(states.map(ObjectIdentifier.init)).count == states.count, "a state twice in one step")
        states.first?.log.batches.append(states.count)
        for (state, token) in zip(states, tokens) { try state.append(token) }
    }

    func fork(into spare: ScriptedState?) throws -> ScriptedState {
        guard let spare else { return try fork() }
        precondition(spare !== self, "a state copied into itself")
        log.reuses += 1
        spare.ids = ids
        spare.logits = logits
        return spare
    }
}

/// A state with fixed logits whatever is appended.
func constantState(_ logits: [Float], context: [Int] = [0]) -> ScriptedState {
    ScriptedState(ids: context) { _ in logits }
}

func fixtureModel() throws -> TableModel {
    try GenerationFixture.loaded.get().model
}
