import Blip2Compute
import Foundation
import Testing
@testable import Blip2Convert
@testable import Blip2Models
@testable import Blip2ModelFile

/// A decode step for several sequences must leave each where a step of its token alone would: logits
/// within float rounding (the many-token tiles sum in another order) and the same token chosen from them,
/// for every weight format and every instruction set this CPU runs.
@Suite struct BatchedStepTests {
    static let precisions: [WeightPrecision] = [.f32, .f16, .q8, .q4, .q4k, .q3k, .q6k]

    @Test(arguments: ["base-f32", "sharded-untied-f32", "odd-hidden-f32"], precisions)
    func batchedStepEqualsSingleSteps(fixture: String, weights: WeightPrecision) throws {
        let converted = try ConvertedModels.shared.model(fixture, weights: weights)
        let reference = try Reference.load(fixture)
        let image = try reference.array(reference.activations.language_projection.file)
        let prompts = reference.tasks.values.map(\.prompt_ids).sorted { $0.count < $1.count }
        for isa in KernelISA.supported {
            let model = try Blip2Model(file: converted.file, compute: try ComputeContext(threads: 2, isa: isa))
            // Three sequences at different lengths (prompts of different sizes, one a step ahead).
            var alone: [LanguageSession] = []
            for (i, prompt) in [prompts.first!, prompts.last!, prompts.first!].enumerated() {
                let session = model.makeSession()
                try session.feed(embeddings: image)
                try session.feed(tokens: prompt + (i == 2 ? [5] : []))
                alone.append(session)
            }
            let together = alone.map { $0.fork() }
            for step in 0..<6 {
                // Each sequence's next token: its argmax, moved off the others' so the rows differ.
                let tokens = alone.enumerated().map { b, session in (argmax(session.logits) + b * 7) % model.vocabularySize }
                for (session, token) in zip(alone, tokens) { try session.feed(tokens: [token]) }
                try LanguageSession.step(together, tokens: tokens)
                for b in 0..<alone.count {
                    #expect(together[b].length == alone[b].length)
                    let scale = alone[b].logits.map(abs).max()!
                    let difference = maxAbsDifference(together[b].logits, alone[b].logits)
                    #expect(difference <= 1e-5 * max(scale, 1), "\(fixture) \(weights) \(isa) step \(step) sequence \(b): differs by \(difference)")
                    #expect(argmax(together[b].logits) == argmax(alone[b].logits), "\(fixture) \(weights) \(isa) step \(step) sequence \(b): another token")
                }
            }
        }
    }

    /// Prompts riding on a step (several tokens for some sessions, one for others) end where feeding each
    /// session its tokens alone leaves it.
    @Test(arguments: ["base-f32", "odd-hidden-f32"], precisions)
    func promptsInAStepEqualFeedsAlone(fixture: String, weights: WeightPrecision) throws {
        let converted = try ConvertedModels.shared.model(fixture, weights: weights)
        let reference = try Reference.load(fixture)
        let image = try reference.array(reference.activations.language_projection.file)
        let prompts = reference.tasks.values.map(\.prompt_ids).sorted { $0.count < $1.count }
        for isa in KernelISA.supported {
            let model = try Blip2Model(file: converted.file, compute: try ComputeContext(threads: 2, isa: isa))
            var alone: [LanguageSession] = []
            for prompt in [prompts.first!, [Int](), prompts.last!] {
                let session = model.makeSession()
                try session.feed(embeddings: image)
                try session.feed(tokens: prompt)
                alone.append(session)
            }
            let together = alone.map { $0.fork() }
            // A decoding sequence's token, a question's prompt on the bare image, then another token.
            let counts = [1, prompts.last!.count, 1]
            let tokens = [argmax(alone[0].logits)] + prompts.last! + [argmax(alone[2].logits)]
            var first = 0
            for (b, session) in alone.enumerated() {
                try session.feed(tokens: Array(tokens[first..<(first + counts[b])]))
                first += counts[b]
            }
            try LanguageSession.step(together, tokens: tokens, counts: counts)
            for b in 0..<alone.count {
                #expect(together[b].length == alone[b].length)
                let scale = alone[b].logits.map(abs).max()!
                let difference = maxAbsDifference(together[b].logits, alone[b].logits)
                #expect(difference <= 1e-5 * max(scale, 1), "\(fixture) \(weights) \(isa) sequence \(b): differs by \(difference)")
                #expect(argmax(together[b].logits) == argmax(alone[b].logits), "\(fixture) \(weights) \(isa) sequence \(b): another token")
            }
            // And the caches hold the same positions: one more token each gives the same logits again.
            let next = alone.map { argmax($0.logits) }
            for (session, token) in zip(alone, next) { try session.feed(tokens: [token]) }
            try LanguageSession.step(together, tokens: next)
            for b in 0..<alone.count {
                let scale = alone[b].logits.map(abs).max()!
                #expect(maxAbsDifference(together[b].logits, alone[b].logits) <= 1e-5 * max(scale, 1), "\(fixture) \(weights) \(isa) sequence \(b), next step")
            }
        }
    }

    @Test func stepRefusesWhatFeedRefuses() throws {
        let model = try ConvertedModels.shared.model("base-f32")
        let full = model.makeSession(capacity: 1), fresh = model.makeSession()
        try full.feed(tokens: [2])
        #expect(throws: ModelLoadError.self) { try LanguageSession.step([fresh, full], tokens: [2, 2]) }
        #expect(throws: ModelLoadError.self) { try LanguageSession.step([fresh], tokens: [model.vocabularySize]) }
        #expect(throws: ModelLoadError.self) { try LanguageSession.step([fresh, full], tokens: [2, 3, 2], counts: [2, 1]) }
        #expect(throws: ModelLoadError.self) { try LanguageSession.step([fresh], tokens: [2, model.vocabularySize], counts: [2]) }
        #expect(fresh.length == 0 && full.length == 1, "a refused step changes nothing")
    }

    @Test func copyFromTakesTheOtherSessionsPositions() throws {
        let model = try ConvertedModels.shared.model("base-f32")
        let a = model.makeSession(), b = model.makeSession()
        try a.feed(tokens: [2, 10, 11])
        try b.feed(tokens: [2, 40])
        b.copy(from: a)
        #expect(b.length == 3 && b.logits == a.logits)
        try a.feed(tokens: [12])
        try b.feed(tokens: [12])
        #expect(b.logits == a.logits)
    }

    private func argmax(_ values: [Float]) -> Int { values.indices.max { values[$0] < values[$1] }! }
}
