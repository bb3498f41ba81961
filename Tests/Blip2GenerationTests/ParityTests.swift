import Foundation
import Testing
@testable import Blip2Generation

/// Every case transformers' own `generate` produced on the toy model (Tools/make_generation_cases.py).
@Suite("transformers parity")
struct ParityTests {
    @Test("the fixture loads and covers every strategy")
    func fixtureLoads() throws {
        let fixture = try GenerationFixture.loaded.get()
        #expect(fixture.table.count == fixture.table_rows)
        #expect(fixture.table.allSatisfy { $0.count == fixture.vocab_size })
        let cases = fixture.cases
        #expect(cases.count >= 190)
        #expect(cases.filter { $0.options.num_beams > 1 }.count >= 100)
        #expect(cases.contains { $0.options.do_sample })
        for mode in EarlyStopping.allCases {
            #expect(cases.contains { $0.options.num_beams > 1 && $0.options.early_stopping == mode.rawValue })
        }
    }

    @Test("same ids and scores as transformers", arguments: GenerationFixture.cases)
    func matchesTransformers(_ testCase: GenerationFixture.Case) throws {
        let log = StateLog()
        let state = ScriptedState(model: try fixtureModel(), context: testCase.context, log: log)
        let options = testCase.options.generationOptions
        let result = try Generator.generate(from: state, contextIds: testCase.context, options: options)
        #expect(result.map(\.tokens) == testCase.expected.map(\.tokens))
        // Stopped at the same step: every step but the last feeds one token per beam.
        #expect(log.appends == (testCase.steps - 1) * options.numBeams, "transformers ran \(testCase.steps) steps")
        for (got, expected) in zip(result, testCase.expected) {
            if let score = expected.score {
                let gotScore = try #require(got.score)
                // 1e-4, or a few float32 ulps for the large scores a negative length penalty makes.
                let tolerance = max(1e-4, abs(score) * 1e-6)
                #expect(abs(gotScore - score) <= tolerance, "score \(gotScore) vs transformers \(score)")
            } else {
                #expect(got.score == nil)
            }
            let endsWithEOS = options.eosTokenId != nil && got.tokens.last == options.eosTokenId
            #expect(got.finishedByEOS == endsWithEOS)
            #expect(got.finishedByEOS || got.tokens.count == options.maxNewTokens)
        }
    }

    /// The three `earlyStopping` modes must matter: several fixture groups give different results for them.
    @Test("early-stopping modes are distinguished")
    func earlyStoppingModesDiffer() throws {
        let cases = GenerationFixture.cases.filter { $0.name.hasPrefix("beam_modes") }
        let groups = Dictionary(grouping: cases) { String($0.name.split(separator: "_").dropLast().joined(separator: "_")) }
        let differing = groups.values.filter { Set($0.map { $0.expected.map(\.tokens) }).count > 1 }
        #expect(differing.count >= 3)
    }
}
