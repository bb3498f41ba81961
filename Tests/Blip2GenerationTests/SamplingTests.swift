import Foundation
import Testing
@testable import Blip2Generation

@Suite("sampling")
struct SamplingTests {
    static let context = [23, 23, 23, 23, 1, 7, 12]

    func sampled(seed: UInt64, count: Int = 1, configure: (inout GenerationOptions) -> Void = { _ in }) throws -> [[Int]] {
        var options = GenerationOptions()
        options.doSample = true
        options.topK = 0
        options.temperature = 1.5
        options.maxNewTokens = 15
        options.eosTokenId = 2
        options.numReturnSequences = count
        options.seed = seed
        configure(&options)
        let state = ScriptedState(model: try fixtureModel(), context: Self.context)
        return try Generator.generate(from: state, contextIds: Self.context, options: options).map(\.tokens)
    }

    @Test("the same seed gives the same sequences")
    func reproducible() throws {
        let first = try sampled(seed: 42, count: 4)
        let second = try sampled(seed: 42, count: 4)
        #expect(first == second)
        #expect(Set(first).count > 1, "four samples at temperature 1.5 should not all agree")
    }

    @Test("different seeds give different sequences")
    func seedsDiffer() throws {
        let results = try (1...6).map { try sampled(seed: UInt64($0))[0] }
        #expect(Set(results).count >= 5)
    }

    @Test("sequence i does not depend on how many are requested")
    func streamsAreIndependent() throws {
        let three = try sampled(seed: 9, count: 3)
        #expect(try sampled(seed: 9, count: 1)[0] == three[0])
        #expect(try sampled(seed: 9, count: 2) == Array(three.prefix(2)))
    }

    static let greedyCases = GenerationFixture.cases.filter { $0.options.num_beams == 1 && !$0.options.do_sample }

    @Test("top-k 1 equals greedy search (any temperature)", arguments: greedyCases)
    func topKOneIsGreedy(_ testCase: GenerationFixture.Case) throws {
        var options = testCase.options.generationOptions
        options.doSample = true
        options.topK = 1
        options.temperature = 0.3 + Double(testCase.context.count % 5)
        options.seed = UInt64(testCase.context.count)
        let state = ScriptedState(model: try fixtureModel(), context: testCase.context)
        let result = try Generator.generate(from: state, contextIds: testCase.context, options: options)
        #expect(result.map(\.tokens) == testCase.expected.map(\.tokens))
    }

    @Test("a temperature near zero samples the greedy sequence", arguments: greedyCases)
    func coldSamplingIsGreedy(_ testCase: GenerationFixture.Case) throws {
        var options = testCase.options.generationOptions
        options.doSample = true
        options.topK = 0
        options.temperature = 1e-3
        let state = ScriptedState(model: try fixtureModel(), context: testCase.context)
        let result = try Generator.generate(from: state, contextIds: testCase.context, options: options)
        #expect(result.map(\.tokens) == testCase.expected.map(\.tokens))
    }

    /// 0.10 0.40 0.05 0.25 0.20; see ProcessorTests.topP for the mass rule.
    static let fiveWay = [0.10, 0.40, 0.05, 0.25, 0.20].map { Float(log($0)) }

    func frequencies(topP: Double, draws: Int) throws -> [Double] {
        var options = GenerationOptions()
        options.doSample = true
        options.topK = 0
        options.topP = topP
        options.maxNewTokens = 1
        options.numReturnSequences = draws
        options.seed = 2024
        let result = try Generator.generate(from: constantState(Self.fiveWay), contextIds: [0], options: options)
        var counts = [Double](repeating: 0, count: 5)
        for sequence in result { counts[sequence.tokens[0]] += 1 }
        return counts.map { $0 / Double(draws) }
    }

    @Test("multinomial draws follow the distribution")
    func multinomial() throws {
        let observed = try frequencies(topP: 1, draws: 4000)
        for (got, expected) in zip(observed, [0.10, 0.40, 0.05, 0.25, 0.20]) {
            #expect(abs(got - expected) < 0.03, "\(observed)")
        }
    }

    @Test("top-p samples only the kept tokens, renormalised")
    func topPSampling() throws {
        let observed = try frequencies(topP: 0.7, draws: 3000)
        #expect(observed[0] == 0 && observed[2] == 0, "\(observed)")
        for (token, p) in [(1, 0.40), (3, 0.25), (4, 0.20)] {
            #expect(abs(observed[token] - p / 0.85) < 0.04, "\(observed)")
        }
        #expect(try frequencies(topP: 0.3, draws: 200) == [0, 1, 0, 0, 0])
    }

    @Test("top-k samples only the k most likely tokens")
    func topKSampling() throws {
        var options = GenerationOptions()
        options.doSample = true
        options.topK = 2
        options.maxNewTokens = 1
        options.numReturnSequences = 500
        let result = try Generator.generate(from: constantState(Self.fiveWay), contextIds: [0], options: options)
        #expect(Set(result.map { $0.tokens[0] }) == [1, 3])
    }

    @Test("beam sampling is reproducible and returns ranked hypotheses")
    func beamSampling() throws {
        func run(seed: UInt64) throws -> [GeneratedSequence] {
            var options = GenerationOptions()
            options.doSample = true
            options.numBeams = 3
            options.numReturnSequences = 3
            options.temperature = 1.5
            options.maxNewTokens = 12
            options.eosTokenId = 2
            options.seed = seed
            let state = ScriptedState(model: try fixtureModel(), context: Self.context)
            return try Generator.generate(from: state, contextIds: Self.context, options: options)
        }
        let first = try run(seed: 5)
        #expect(first == (try run(seed: 5)))
        #expect(first.count == 3)
        let scores = first.compactMap(\.score)
        #expect(scores.count == 3 && scores == scores.sorted(by: >))
        #expect(first.allSatisfy { $0.finishedByEOS || $0.tokens.count == 12 })
        let others = try (6...9).map { try run(seed: $0).map(\.tokens) }
        #expect(Set(others + [first.map(\.tokens)]).count > 1)
    }

    @Test("beam sampling with fewer probable tokens than candidates still runs")
    func beamSamplingNarrow() throws {
        var options = GenerationOptions()
        options.doSample = true
        options.numBeams = 4
        options.topK = 1  // kept at 2 per beam: 2 positive weights for 8 draws at the first step
        options.maxNewTokens = 6
        options.eosTokenId = 2
        let state = ScriptedState(model: try fixtureModel(), context: Self.context)
        let result = try Generator.generate(from: state, contextIds: Self.context, options: options)
        #expect(result.count == 1)
        #expect(result[0].score.map { $0 > -1e8 } == true)
    }
}
