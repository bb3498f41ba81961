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
        try forEachISA(fixture, weights) { model, image, prompts, label in
            // Three sequences at different lengths (prompts of different sizes, one a step ahead).
            let alone = try [prompts.first!, prompts.last!, prompts.first! + [5]].map { try session(model, image, $0) }
            let together = alone.map { $0.fork() }
            for step in 0..<6 {
                // Each sequence's next token: its argmax, moved off the others' so the rows differ.
                let tokens = alone.enumerated().map { b, session in (argmax(session.logits) + b * 7) % model.vocabularySize }
                for (session, token) in zip(alone, tokens) { try session.feed(tokens: [token]) }
                try LanguageSession.step(together, tokens: tokens)
                expectSame(together, alone, "\(label) step \(step)")
            }
        }
    }

    /// Prompts riding on a step (several tokens for some sessions, one for others) end where feeding each
    /// session its tokens alone leaves it.
    @Test(arguments: ["base-f32", "odd-hidden-f32"], precisions)
    func promptsInAStepEqualFeedsAlone(fixture: String, weights: WeightPrecision) throws {
        try forEachISA(fixture, weights) { model, image, prompts, label in
            let alone = try [prompts.first!, [], prompts.last!].map { try session(model, image, $0) }
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
            expectSame(together, alone, label)
            // And the caches hold the same positions: one more token each gives the same logits again.
            let next = alone.map { argmax($0.logits) }
            for (session, token) in zip(alone, next) { try session.feed(tokens: [token]) }
            try LanguageSession.step(together, tokens: next)
            expectSame(together, alone, "\(label), next step")
        }
    }

    /// An image's rows and a prompt's in one pass end exactly where two passes leave them (the same bits:
    /// logits now and after the next token), for a short prompt and one that takes more than a chunk.
    @Test(arguments: ["base-f32", "odd-hidden-f32"], precisions)
    func imageAndPromptInOnePassEqualTwoPasses(fixture: String, weights: WeightPrecision) throws {
        try forEachISA(fixture, weights) { model, image, prompts, label in
            let long = Array(repeating: prompts.last!, count: LanguageModel.chunkTokens / prompts.last!.count + 1).flatMap { $0 }
            for prompt in [prompts.last!, long] {
                let apart = model.makeSession(), together = model.makeSession()
                try apart.feed(embeddings: image)
                try apart.feed(tokens: prompt)
                try together.feed(embeddings: image, thenTokens: prompt)
                #expect(together.length == apart.length)
                #expect(together.logits == apart.logits, "\(label), \(prompt.count) prompt tokens")
                let next = argmax(apart.logits)
                try apart.feed(tokens: [next])
                try together.feed(tokens: [next])
                #expect(together.logits == apart.logits, "\(label), \(prompt.count) prompt tokens, next step")
            }
        }
    }

    /// The sequences of a step that hold leading positions alike (beams of one prompt, parted at different
    /// tokens) read them from the earlier sequence that holds most of them: the same bits as each reading its
    /// own copy, over several steps. The followers' own copies are overwritten with NaN, so a read of them
    /// shows; a sequence computed apart shares nothing.
    @Test(arguments: ["base-f32", "odd-hidden-f32"], precisions)
    func sharedPositionsAreReadFromOneSequence(fixture: String, weights: WeightPrecision) throws {
        try forEachISA(fixture, weights) { model, image, prompts, label in
            let root = try session(model, image, prompts.last!)
            let parted = root.fork(), early = root.fork()
            try parted.feed(tokens: [7])
            let later = parted.fork()
            try later.feed(tokens: [9])
            let together = [parted, early, later, try session(model, image, prompts.first!)]
            let p = root.length
            #expect(p >= LanguageModel.minimumSharedPositions, "the fixture's prompt is long enough to share")
            #expect(LanguageModel.sharedPrefix(of: 0, in: together) == .init(leader: 0, positions: 0))
            #expect(LanguageModel.sharedPrefix(of: 1, in: together) == .init(leader: 0, positions: p))
            #expect(LanguageModel.sharedPrefix(of: 2, in: together) == .init(leader: 0, positions: p + 1))
            #expect(LanguageModel.sharedPrefix(of: 3, in: together).positions == 0)

            let apart = together.map { $0.fork() }
            for (b, positions) in [(1, p), (2, p + 1)] {
                let cache = together[b].cache
                for layer in 0..<cache.layers {
                    for block in [cache.keys(layer: layer), cache.values(layer: layer)] {
                        for h in 0..<cache.heads { (block + h * cache.headStride).update(repeating: .nan, count: positions * cache.headDim) }
                    }
                }
            }
            let language = model.language!
            defer { language.sharesPrefixes = true }
            for step in 0..<3 {
                let tokens = apart.enumerated().map { b, session in (argmax(session.logits) + b * 5) % model.vocabularySize }
                language.sharesPrefixes = false
                try LanguageSession.step(apart, tokens: tokens)
                language.sharesPrefixes = true
                try LanguageSession.step(together, tokens: tokens)
                for b in 0..<together.count {
                    #expect(together[b].logits.map(\.bitPattern) == apart[b].logits.map(\.bitPattern), "\(label) step \(step) sequence \(b)")
                }
            }
        }
    }

    /// `body` on the fixture converted to `weights`, once per instruction set this CPU runs, with the image's
    /// language-model input rows and the fixture's prompts (shortest first).
    private func forEachISA(_ fixture: String, _ weights: WeightPrecision,
                            _ body: (Blip2Model, [Float], [[Int]], String) throws -> Void) throws {
        let converted = try ConvertedModels.shared.model(fixture, weights: weights)
        let reference = try Reference.load(fixture)
        let image = try reference.array(reference.activations.language_projection.file)
        let prompts = reference.tasks.values.map(\.prompt_ids).sorted { $0.count < $1.count }
        for isa in KernelISA.supported {
            let model = try Blip2Model(file: converted.file, compute: try ComputeContext(threads: 2, isa: isa))
            try body(model, image, prompts, "\(fixture) \(weights) \(isa)")
        }
    }

    private func session(_ model: Blip2Model, _ image: [Float], _ prompt: [Int]) throws -> LanguageSession {
        let session = model.makeSession()
        try session.feed(embeddings: image)
        try session.feed(tokens: prompt)
        return session
    }

    /// Same lengths, logits within float rounding, and the same token chosen.
    private func expectSame(_ together: [LanguageSession], _ alone: [LanguageSession], _ label: String) {
        for b in 0..<alone.count {
            #expect(together[b].length == alone[b].length)
            let scale = alone[b].logits.map(abs).max()!
            let difference = maxAbsDifference(together[b].logits, alone[b].logits)
            #expect(difference <= 1e-5 * max(scale, 1), "\(label) sequence \(b): differs by \(difference)")
            #expect(argmax(together[b].logits) == argmax(alone[b].logits), "\(label) sequence \(b): another token")
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

    /// A copy between sessions that share positions (beams of one prompt) moves only the rest, and ends
    /// where a copy of everything would: same logits now and after the next token.
    @Test func copyBetweenRelatedSessionsMovesOnlyWhatDiffers() throws {
        let model = try ConvertedModels.shared.model("base-f32")
        let root = model.makeSession()
        try root.feed(tokens: [2, 10, 11, 12])
        let a = root.fork(), b = root.fork()
        #expect(a.cache.sharedPrefix(with: b.cache) == 4)
        try a.feed(tokens: [20, 21])
        try b.feed(tokens: [30])
        #expect(a.cache.sharedPrefix(with: b.cache) == 4, "positions computed apart are not shared")
        b.copy(from: a)
        #expect(b.length == 6 && b.logits == a.logits && a.cache.sharedPrefix(with: b.cache) == 6)
        try a.feed(tokens: [22])
        try b.feed(tokens: [22])
        #expect(b.logits == a.logits)

        // Positions rewritten after a truncation are new ones, though the same positions held alike before.
        let c = a.fork()
        a.truncate(to: 5)
        try a.feed(tokens: [40, 41])
        #expect(a.cache.sharedPrefix(with: c.cache) == 5)
        c.copy(from: a)
        #expect(c.logits == a.logits)
        try a.feed(tokens: [50])
        try c.feed(tokens: [50])
        #expect(c.logits == a.logits)

        // The same tokens computed in another session share no stamps, so nothing is assumed alike.
        let fresh = model.makeSession()
        try fresh.feed(tokens: [2, 10, 11, 12, 20, 40, 41, 50])
        #expect(fresh.cache.sharedPrefix(with: a.cache) == 0)
    }

    private func argmax(_ values: [Float]) -> Int { values.indices.max { values[$0] < values[$1] }! }
}
