import Foundation
import Testing
@testable import Blip2Generation

@Suite("options and errors")
struct ValidationTests {
    @Test("defaults are transformers' GenerationConfig defaults")
    func defaults() throws {
        let o = GenerationOptions()
        #expect(o.maxNewTokens == 20 && o.minNewTokens == 0 && o.numBeams == 1 && o.numReturnSequences == 1)
        #expect(o.lengthPenalty == 1 && o.earlyStopping == .heuristic && o.noRepeatNgramSize == 0)
        #expect(!o.doSample && o.temperature == 1 && o.topK == 50 && o.topP == 1 && o.repetitionPenalty == 1)
        #expect(o.eosTokenId == nil && o.padTokenId == nil)
        try o.validate()
    }

    static let invalid: [(String, @Sendable (inout GenerationOptions) -> Void)] = [
        ("maxNewTokens", { $0.maxNewTokens = 0 }),
        ("maxNewTokens", { $0.maxNewTokens = .max }),
        ("minNewTokens", { $0.minNewTokens = -1 }),
        ("numBeams", { $0.numBeams = 100_000 }),
        ("numBeams", { $0.numBeams = 0 }),
        ("lengthPenalty", { $0.lengthPenalty = .nan }),
        ("noRepeatNgramSize", { $0.noRepeatNgramSize = -2 }),
        ("numReturnSequences", { $0.numReturnSequences = 0 }),
        ("numReturnSequences", { $0.numReturnSequences = 2 }),  // greedy has one result
        ("numReturnSequences", { $0.numBeams = 3; $0.numReturnSequences = 4 }),
        ("repetitionPenalty", { $0.repetitionPenalty = 0 }),
        ("repetitionPenalty", { $0.repetitionPenalty = -1.2 }),
        ("repetitionPenalty", { $0.repetitionPenalty = .infinity }),
        ("eosTokenId", { $0.eosTokenId = -1 }),
        ("padTokenId", { $0.padTokenId = -5 }),
        ("temperature", { $0.doSample = true; $0.temperature = 0 }),
        ("temperature", { $0.doSample = true; $0.temperature = -1 }),
        ("topK", { $0.doSample = true; $0.topK = -1 }),
        ("topP", { $0.doSample = true; $0.topP = 0 }),
        ("topP", { $0.doSample = true; $0.topP = 1.5 }),
        ("topP", { $0.doSample = true; $0.topP = .nan }),
    ]

    @Test("invalid settings are rejected with the setting's name", arguments: invalid.indices)
    func rejects(_ index: Int) {
        let (name, change) = Self.invalid[index]
        var options = GenerationOptions()
        change(&options)
        #expect {
            try options.validate()
        } throws: { error in
            guard case let GenerationError.invalidOption(optionName, _, requirement) = error else { return false }
            return optionName == name && !requirement.isEmpty && "\(error)".contains(name)
        }
        // generate validates too, before touching the state.
        let log = StateLog()
        let state = ScriptedState(ids: [0], log: log) { _ in [0, 1, 2] }
        #expect(throws: GenerationError.self) { try Generator.generate(from: state, contextIds: [0], options: options) }
        #expect(log.appends == 0 && log.forks == 0)
    }

    @Test("settings transformers accepts are accepted")
    func accepts() throws {
        var beams = GenerationOptions()
        beams.numBeams = 4
        beams.numReturnSequences = 4
        beams.lengthPenalty = -2
        beams.earlyStopping = .never
        try beams.validate()
        var sampling = GenerationOptions()
        sampling.doSample = true
        sampling.numReturnSequences = 7
        sampling.topK = 0
        sampling.topP = 1
        try sampling.validate()
        var greedy = GenerationOptions()
        greedy.temperature = 0  // ignored without sampling, as transformers only warns
        greedy.topP = 5
        greedy.minNewTokens = 3  // no effect without EOS
        try greedy.validate()
    }

    func generate(_ logits: @escaping ([Int]) -> [Float], context: [Int] = [0],
                  configure: (inout GenerationOptions) -> Void = { _ in }) throws -> [GeneratedSequence] {
        var options = GenerationOptions()
        options.maxNewTokens = 3
        configure(&options)
        return try Generator.generate(from: ScriptedState(ids: context, logitsFor: logits), contextIds: context,
                                      options: options)
    }

    @Test("broken model output gets a clear error in every strategy", arguments: [1, 3])
    func brokenLogits(numBeams: Int) {
        let beams: (inout GenerationOptions) -> Void = { $0.numBeams = numBeams }
        #expect(throws: GenerationError.nonFiniteLogit(step: 1, token: 2, value: .infinity)) {
            try generate({ $0.count > 1 ? [0, 1, .infinity] : [0, 1, 2] }, configure: beams)
        }
        #expect { try generate({ _ in [0, .nan, 1] }, configure: beams) } throws: { error in
            guard case GenerationError.nonFiniteLogit(0, 1, _) = error else { return false }
            return true
        }
        #expect(throws: GenerationError.emptyLogits) { try generate({ _ in [] }, configure: beams) }
        #expect(throws: GenerationError.logitsSizeChanged(expected: 3, actual: 4, step: 1)) {
            try generate({ $0.count > 1 ? [0, 1, 2, 3] : [0, 1, 2] }, configure: beams)
        }
        #expect(throws: GenerationError.noFiniteLogit(step: 0)) {
            try generate({ _ in [-.infinity, -.infinity, -.infinity] }, configure: beams)
        }
    }

    @Test("negative context ids are rejected")
    func negativeContext() {
        #expect(throws: GenerationError.invalidContextToken(index: 1, id: -3)) {
            try generate({ _ in [0, 1] }, context: [4, -3])
        }
    }

    @Test("beam search needs two candidates per beam")
    func vocabularyTooSmall() {
        #expect(throws: GenerationError.vocabularyTooSmall(vocabularySize: 1, numBeams: 2)) {
            try generate({ _ in [0] }) { $0.numBeams = 2 }
        }
    }

    @Test("sampling with every token suppressed fails; greedy takes id 0 like torch.argmax")
    func everythingSuppressed() throws {
        let banAll: (inout GenerationOptions) -> Void = {
            $0.noRepeatNgramSize = 1
            $0.maxNewTokens = 1
        }
        #expect(throws: GenerationError.nothingToSample(step: 0)) {
            try generate({ _ in [1, 2, 3] }, context: [0, 1, 2]) {
                banAll(&$0)
                $0.doSample = true
            }
        }
        let greedy = try generate({ _ in [1, 2, 3] }, context: [0, 1, 2], configure: banAll)
        #expect(greedy.map(\.tokens) == [[0]])
    }

    @Test("error messages say what to do")
    func messages() {
        let errors: [GenerationError] = [
            .invalidOption(name: "topP", value: "0", requirement: "in (0, 1]"),
            .invalidContextToken(index: 0, id: -1), .emptyLogits,
            .logitsSizeChanged(expected: 3, actual: 4, step: 2), .nonFiniteLogit(step: 0, token: 1, value: .nan),
            .noFiniteLogit(step: 3), .nothingToSample(step: 1), .vocabularyTooSmall(vocabularySize: 1, numBeams: 2),
        ]
        for error in errors {
            #expect(error.description.count > 40, "\(error)")
        }
    }
}

@Suite("settings named for their audience")
struct SettingNamingTests {
    @Test("messages use the names the caller gives, in the requirement too")
    func naming() {
        var options = GenerationOptions()
        options.numReturnSequences = 3
        let flags: (GenerationOptions.Setting) -> String = { "--" + $0.rawValue.lowercased() }
        #expect {
            try options.validate(naming: flags)
        } throws: { error in
            guard case let GenerationError.invalidOption(name, _, requirement) = error else { return false }
            return name == "--numreturnsequences" && requirement.contains("--numbeams") && requirement.contains("--dosample")
                && !"\(error)".contains("numReturnSequences")
        }
    }

    @Test("only one greedy or sampled sequence streams")
    func streaming() {
        var options = GenerationOptions()
        #expect(options.streamsTokens)
        options.doSample = true
        #expect(options.streamsTokens)
        options.numReturnSequences = 2
        #expect(!options.streamsTokens)
        options.numReturnSequences = 1
        options.numBeams = 2
        #expect(!options.streamsTokens)
    }
}
