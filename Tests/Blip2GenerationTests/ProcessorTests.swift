import Foundation
import Testing
@testable import Blip2Generation

/// Hand-computed checks of each logits processor, from transformers' definitions.
@Suite("logits processors")
struct ProcessorTests {
    static let ninf = -Float.infinity

    func processed(_ scores: [Float], sequence: [Int], contextLength: Int = 0, minTokensToKeep: Int = 1,
                   configure: (inout GenerationOptions) -> Void) -> [Float] {
        var options = GenerationOptions()
        configure(&options)
        let processor = LogitsProcessor(options: options, vocabularySize: scores.count, contextLength: contextLength,
                                        maxSequenceLength: sequence.count, minTokensToKeep: minTokensToKeep)
        var result = scores
        result.withUnsafeMutableBufferPointer { row in
            sequence.withUnsafeBufferPointer { processor.process(row, sequence: $0) }
        }
        return result
    }

    @Test("repetition penalty divides positive and multiplies negative scores, once per distinct id")
    func repetitionPenaltySignRule() {
        let out = processed([2, -2, 1, 0.5, 3], sequence: [0, 1, 1, 0, 3, 9]) { $0.repetitionPenalty = 1.5 }
        // id 9 is beyond the logits: ignored, as transformers clamps it to a dropped column.
        #expect(out == [Float(2) / Float(1.5), Float(-2) * Float(1.5), 1, Float(0.5) / Float(1.5), 3])
        let below = processed([2, -2, 1], sequence: [0, 1]) { $0.repetitionPenalty = 0.5 }
        #expect(below == [4, -1, 1])
    }

    @Test("no-repeat n-grams ban the continuation of every earlier match of the last n-1 ids")
    func noRepeatNgrams() {
        // Bigrams in 1 2 1 3 1: (1,2), (2,1), (1,3), (3,1); last id 1 -> ban 2 and 3.
        let two = processed([0, 0, 0, 0, 0], sequence: [1, 2, 1, 3, 1]) { $0.noRepeatNgramSize = 2 }
        #expect(two == [0, 0, Self.ninf, Self.ninf, 0])
        // Trigrams: the last two ids (3, 1) never occurred before, so nothing is banned ...
        let three = processed([0, 0, 0, 0, 0], sequence: [1, 2, 1, 3, 1]) { $0.noRepeatNgramSize = 3 }
        #expect(three == [0, 0, 0, 0, 0])
        // ... but here (2, 1) did, followed by 3.
        let threeHit = processed([0, 0, 0, 0, 0], sequence: [2, 1, 3, 2, 1]) { $0.noRepeatNgramSize = 3 }
        #expect(threeHit == [0, 0, 0, Self.ninf, 0])
        // n = 1 bans every id already present; shorter sequences than n ban nothing.
        let one = processed([0, 0, 0, 0, 0], sequence: [4, 0]) { $0.noRepeatNgramSize = 1 }
        #expect(one == [Self.ninf, 0, 0, 0, Self.ninf])
        let short = processed([0, 0, 0], sequence: [1, 1]) { $0.noRepeatNgramSize = 3 }
        #expect(short == [0, 0, 0])
    }

    @Test("min_new_tokens suppresses EOS until enough tokens follow the context")
    func minNewTokens() {
        let early = processed([1, 2, 3], sequence: [0, 1, 1], contextLength: 2) {
            $0.minNewTokens = 2
            $0.eosTokenId = 2
        }
        #expect(early == [1, 2, Self.ninf])
        let late = processed([1, 2, 3], sequence: [0, 1, 1, 1], contextLength: 2) {
            $0.minNewTokens = 2
            $0.eosTokenId = 2
        }
        #expect(late == [1, 2, 3])
    }

    @Test("warpers only apply when sampling")
    func warpersNeedSampling() {
        let scores: [Float] = [1, 4, 2, 3]
        let greedy = processed(scores, sequence: [0]) {
            $0.temperature = 0.5
            $0.topK = 1
            $0.topP = 0.1
        }
        #expect(greedy == scores)
        let sampled = processed(scores, sequence: [0]) {
            $0.doSample = true
            $0.temperature = 0.5
            $0.topK = 0
        }
        #expect(sampled == [2, 8, 4, 6])
    }

    @Test("top-k keeps the k largest and ties with the k-th")
    func topK() {
        let out = processed([1, 5, 3, 5, 3, 0], sequence: [0]) {
            $0.doSample = true
            $0.topK = 3
        }
        #expect(out == [Self.ninf, 5, 3, 5, 3, Self.ninf])
        let keepAtLeast = processed([1, 5, 3, 4], sequence: [0], minTokensToKeep: 2) {
            $0.doSample = true
            $0.topK = 1
        }
        #expect(keepAtLeast == [Self.ninf, 5, Self.ninf, 4])
    }

    /// Probabilities 0.10 0.40 0.05 0.25 0.20: ascending cumulative mass 0.05 (id 2), 0.15 (id 0), 0.35 (id 4),
    /// 0.60 (id 3), 1.0 (id 1). transformers removes ids whose cumulative mass is <= 1 - top_p.
    @Test("top-p keeps the smallest most-likely set reaching the mass", arguments: [
        (0.7, 1, [1, 3, 4]), (0.6, 1, [1, 3]), (0.3, 1, [1]), (0.3, 2, [1, 3]), (0.9, 1, [0, 1, 3, 4]),
        (1e-6, 1, [1]),
    ])
    func topP(topP: Double, minTokensToKeep: Int, kept: [Int]) {
        let logits = [0.10, 0.40, 0.05, 0.25, 0.20].map { Float(log($0)) }
        let out = processed(logits, sequence: [0], minTokensToKeep: minTokensToKeep) {
            $0.doSample = true
            $0.topK = 0
            $0.topP = topP
        }
        let survivors = out.indices.filter { out[$0] > -.infinity }
        #expect(survivors == kept)
        for i in survivors { #expect(out[i] == logits[i]) }
    }

    @Test("processors run in transformers' order: penalty, n-grams, min length, temperature, top-k, top-p")
    func order() {
        // The penalty turns id 1 from the best (3) into 3/3 = 1 before top-k 1 picks id 0 (2).
        let out = processed([2, 3, 1, -1], sequence: [1], contextLength: 1) {
            $0.repetitionPenalty = 3
            $0.doSample = true
            $0.topK = 1
            $0.temperature = 2
        }
        #expect(out == [1, Self.ninf, Self.ninf, Self.ninf])
    }

    @Test("softmax and log-softmax subtract the maximum")
    func softmax() {
        let x: [Float] = [1000, 1001, -.infinity, 999]
        var p = [Float](repeating: 0, count: 4)
        var lp = [Float](repeating: 0, count: 4)
        x.withUnsafeBufferPointer { x in
            p.withUnsafeMutableBufferPointer { _ = Softmax.probabilities(x, into: $0) }
            lp.withUnsafeMutableBufferPointer { Softmax.logProbabilities(x, into: $0) }
        }
        let e1 = exp(-1.0), e2 = exp(-2.0), sum = 1 + e1 + e2
        #expect(abs(Double(p[1]) - 1 / sum) < 1e-6)
        #expect(abs(Double(p[0]) - e1 / sum) < 1e-6)
        #expect(p[2] == 0)
        #expect(abs(Double(lp[3]) - (-2 - log(sum))) < 1e-5)
        #expect(lp[2] == -.infinity)
    }
}
