import Foundation
import Testing
@testable import Blip2Generation

@Suite("streaming and state use")
struct StreamingTests {
    static let context = [23, 23, 1, 9, 4]

    func run(_ configure: (inout GenerationOptions) -> Void) throws -> (result: [GeneratedSequence], log: StateLog) {
        var options = GenerationOptions()
        options.maxNewTokens = 12
        options.eosTokenId = 2
        configure(&options)
        let log = StateLog()
        let state = ScriptedState(model: try fixtureModel(), context: Self.context, log: log)
        let result = try Generator.generate(from: state, contextIds: Self.context, options: options) { token in
            log.events.append("token \(token)")
        }
        return (result, log)
    }

    @Test("greedy streams each token before the model consumes it, and never feeds the last one")
    func greedyOrder() throws {
        for eos in [2, nil] as [Int?] {
            let (result, log) = try run { $0.eosTokenId = eos }
            let tokens = try #require(result.first).tokens
            var expected: [String] = []
            for (i, token) in tokens.enumerated() {
                expected.append("token \(token)")
                if i + 1 < tokens.count { expected.append("append \(token)") }
            }
            #expect(log.events == expected)
            #expect(log.forks == 0)
        }
    }

    @Test("greedy stops at EOS, returning it, and does not feed it")
    func stopsAtEOS() throws {
        let log = StateLog()
        // Token 5 is best right after the context, EOS (2) after that.
        let state = ScriptedState(ids: [7, 7], log: log) { ids in ids.count == 2 ? [0, 0, 1, 0, 0, 3] : [0, 0, 4, 1, 0, 0] }
        var options = GenerationOptions()
        options.eosTokenId = 2
        let result = try Generator.generate(from: state, contextIds: [7, 7], options: options)
        #expect(result == [GeneratedSequence(tokens: [5, 2], score: nil, finishedByEOS: true)])
        #expect(log.appends == 1)
    }

    @Test("sampling several sequences streams the first and forks for all but the last")
    func samplingStreamsFirst() throws {
        let (result, log) = try run {
            $0.doSample = true
            $0.numReturnSequences = 3
            $0.seed = 3
        }
        let streamed = log.events.filter { $0.hasPrefix("token") }
        #expect(streamed == result[0].tokens.map { "token \($0)" })
        #expect(log.forks == 2)
    }

    @Test("beam search reports the best sequence once the search is over")
    func beamStreamsAtEnd() throws {
        let (result, log) = try run {
            $0.numBeams = 4
            $0.numReturnSequences = 2
        }
        let firstToken = try #require(log.events.firstIndex { $0.hasPrefix("token") })
        #expect(log.events[firstToken...].allSatisfy { $0.hasPrefix("token") })
        #expect(Array(log.events[firstToken...]) == result[0].tokens.map { "token \($0)" })
        #expect(log.forks > 0)
    }

    @Test("beam search feeds at most numBeams tokens per step and none after the last")
    func beamStateUse() throws {
        let (result, log) = try run {
            $0.numBeams = 3
            $0.eosTokenId = nil
            $0.maxNewTokens = 5
        }
        #expect(result[0].tokens.count == 5)
        // Steps 1...4 each feed 3 beams; the fifth token is never fed.
        #expect(log.appends == 4 * 3)
        #expect(log.forks <= 4 * 2)
    }
}

@Suite("cancellation between tokens")
struct CancellationTests {
    @Test("greedy search stops before the model consumes the next token once shouldStop answers true")
    func greedyStops() throws {
        let log = StateLog()
        let state = ScriptedState(model: try fixtureModel(), context: StreamingTests.context, log: log)
        var options = GenerationOptions()
        options.maxNewTokens = 12
        options.eosTokenId = nil
        var streamed: [Int] = []
        #expect(throws: GenerationError.cancelled(step: 3)) {
            try Generator.generate(from: state, contextIds: StreamingTests.context, options: options,
                                   onToken: { streamed.append($0) }, shouldStop: { streamed.count >= 3 })
        }
        #expect(streamed.count == 3)
        // The third token was never fed: the model ran only for the first two.
        #expect(log.appends == 2)
    }

    @Test("a stop that never fires changes nothing")
    func neverStopping() throws {
        var options = GenerationOptions()
        options.maxNewTokens = 12
        options.eosTokenId = 2
        let plain = try Generator.generate(from: ScriptedState(model: try fixtureModel(), context: StreamingTests.context),
                                           contextIds: StreamingTests.context, options: options)
        let watched = try Generator.generate(from: ScriptedState(model: try fixtureModel(), context: StreamingTests.context),
                                             contextIds: StreamingTests.context, options: options, shouldStop: { false })
        #expect(plain == watched)
    }

    @Test("beam search checks between steps")
    func beamStops() throws {
        let log = StateLog()
        let state = ScriptedState(model: try fixtureModel(), context: StreamingTests.context, log: log)
        var options = GenerationOptions()
        options.maxNewTokens = 12
        options.numBeams = 3
        options.eosTokenId = nil
        var asked = 0
        #expect(throws: GenerationError.cancelled(step: 2)) {
            try Generator.generate(from: state, contextIds: StreamingTests.context, options: options,
                                   shouldStop: { asked += 1; return asked > 2 })
        }
        // Two steps ran, each feeding three beams.
        #expect(log.appends == 2 * 3)
    }
}
