import Foundation
import Testing
@testable import Blip2Generation

/// A state that only has the protocol's one-by-one defaults: the generator's results through it are what
/// the batched steps must reproduce.
final class OneByOneState: DecoderState {
    let inner: ScriptedState
    init(_ inner: ScriptedState) { self.inner = inner }
    var logits: [Float] { inner.logits }
    func append(_ token: Int) throws { try inner.append(token) }
    func fork() throws -> OneByOneState { OneByOneState(try inner.fork()) }
}

@Suite("batched steps")
struct BatchedStepsTests {
    static let context = [23, 23, 23, 23, 1, 7, 12]

    func options(_ configure: (inout GenerationOptions) -> Void) -> GenerationOptions {
        var options = GenerationOptions()
        options.maxNewTokens = 12
        options.eosTokenId = 2
        configure(&options)
        return options
    }

    @Test("beam search feeds every running beam in one step and allocates only at the first", arguments: [2, 3, 5])
    func beamsStepTogether(beams: Int) throws {
        for sample in [false, true] {
            let options = options {
                $0.numBeams = beams
                $0.numReturnSequences = beams
                $0.doSample = sample
                $0.seed = 5
                $0.earlyStopping = .never
            }
            let log = StateLog()
            let batched = try Generator.generate(from: ScriptedState(model: try fixtureModel(), context: Self.context, log: log),
                                                 contextIds: Self.context, options: options)
            let alone = try Generator.generate(from: OneByOneState(ScriptedState(model: try fixtureModel(), context: Self.context)),
                                               contextIds: Self.context, options: options)
            #expect(batched == alone, "beams \(beams) sample \(sample)")
            #expect(!log.batches.isEmpty && log.batches.allSatisfy { $0 == beams }, "\(log.batches)")
            #expect(log.forks == beams - 1, "new states only when one becomes \(beams): \(log.forks)")
            #expect(log.reuses > 0, "later copies reuse dropped beams' states")
        }
    }

    @Test("several samples step together and each equals its sequence run alone")
    func samplesStepTogether() throws {
        let options = options {
            $0.doSample = true
            $0.topK = 0
            $0.temperature = 1.5
            $0.numReturnSequences = 4
            $0.seed = 11
        }
        let log = StateLog()
        let batched = try Generator.generate(from: ScriptedState(model: try fixtureModel(), context: Self.context, log: log),
                                             contextIds: Self.context, options: options)
        let alone = try Generator.generate(from: OneByOneState(ScriptedState(model: try fixtureModel(), context: Self.context)),
                                           contextIds: Self.context, options: options)
        #expect(batched == alone)
        let steps = batched.map { $0.tokens.count }.max()! - 1
        #expect(log.batches.count == steps, "one step per token position: \(log.batches)")
        // A sequence leaves the step once it ends, so the batches shrink and never grow.
        #expect(log.batches.first == 4 && zip(log.batches, log.batches.dropFirst()).allSatisfy { $0 >= $1 }, "\(log.batches)")
        #expect(log.appends == batched.map { $0.tokens.count - ($0.finishedByEOS || $0.tokens.count == 12 ? 1 : 0) }.reduce(0, +))
    }
}
