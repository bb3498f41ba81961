import Blip2Compute
import Blip2Core
import Blip2ModelFile
import Foundation
import Testing
@testable import Blip2Pipeline

/// Tests/Fixtures/imatrix/<model>.json, written by Tools/make_imatrix_reference.py.
struct ImatrixReference: Decodable {
    struct Run: Decodable {
        let prompt: String?
        let prompt_ids: [Int]
        let new_ids: [Int]
    }
    struct Entry: Decodable {
        let tokens: Int
        let values: [Double]
    }
    let images: [String]
    let questions: [String]
    let caption_tokens: Int
    let answer_tokens: Int
    let generated: [String: [Run]]
    let entries: [String: Entry]

    static func load(_ model: String) throws -> ImatrixReference {
        let url = packageRoot.appendingPathComponent("Tests/Fixtures/imatrix/\(model).json")
        return try JSONDecoder().decode(ImatrixReference.self, from: Data(contentsOf: url))
    }
}

@Suite struct CalibrationTests {
    /// A pipeline of its own (its own compute context): the shared ones run other tests' products, which
    /// the observer would count.
    func ownPipeline(_ name: String) throws -> Pipeline {
        _ = try Pipelines.shared.pipeline(name)
        return try Pipeline(modelPath: Pipelines.shared.directory.appendingPathComponent("\(name)-f32.blip2").path,
                                 compute: ComputeContext(threads: 2))
    }

    /// The same images and prompts as transformers with forward hooks on every nn.Linear: the same
    /// generated ids, the same token count for every weight, every column's mean of x² within float error.
    @Test(arguments: ["base-f32", "sharded-untied-f32"])
    func matchesTransformersHooks(model name: String) throws {
        let reference = try ImatrixReference.load(name)
        let pipeline = try ownPipeline(name)
        var prompts = CalibrationPrompts(questions: reference.questions)
        #expect(prompts == CalibrationPrompts(), "the reference uses the default questions")
        prompts.captionTokens = reference.caption_tokens
        prompts.answerTokens = reference.answer_tokens
        let statistics = ActivationStatistics(weights: try ActivationStatistics.fittedWeights(of: pipeline.model.config))
        for image in reference.images {
            var timings = StageTimings()
            let pixels = try pipeline.pixels(contentsOf: fixtureModels.appendingPathComponent("images/\(image)"), timings: &timings)
            let runs = try pipeline.calibrate(pixels: pixels, prompts: prompts, statistics: statistics)
            let expected = reference.generated[image]!
            #expect(runs.map(\.prompt) == expected.map(\.prompt))
            #expect(runs.map(\.tokens) == expected.map(\.new_ids), "\(name) \(image): generated ids")
            #expect(runs.map(\.promptTokens) == expected.map(\.prompt_ids.count))
        }
        let matrix = statistics.matrix(source: .init(model: name, images: reference.images.count, prompts: prompts.prompts.map { $0.prompt ?? "" }))
        #expect(Set(matrix.entries.keys) == Set(reference.entries.keys), "\(name): the same weights")
        var worst = 0.0
        for (key, theirs) in reference.entries {
            guard let ours = matrix.entries[key] else { continue }
            #expect(ours.tokens == theirs.tokens, "\(name) \(key): token count")
            #expect(ours.values.count == theirs.values.count, "\(name) \(key): columns")
            let scale = theirs.values.max() ?? 0
            for (a, b) in zip(ours.values, theirs.values) {
                // Relative to the column, with a floor at a millionth of the matrix's largest column.
                let error = abs(Double(a) - b) / max(b, 1e-6 * scale, 1e-30)
                worst = max(worst, error)
            }
        }
        #expect(worst < 2e-4, "\(name): worst relative difference \(worst)")
    }

    /// Counting is per weight and exact: the statistics are sums of squares over the rows they are shown.
    @Test func statisticsAddSquaresPerColumn() throws {
        let statistics = ActivationStatistics(weights: [("a.weight", 3), ("b.weight", 2)])
        let weight = [Float](repeating: 0, count: 6)
        try weight.withUnsafeBytes { bytes in
            let a = WeightMatrix(name: "a.weight", type: .f32, rows: 2, cols: 3, data: bytes.baseAddress!)
            let other = WeightMatrix(name: "c.weight", type: .f32, rows: 2, cols: 3, data: bytes.baseAddress!)
            let x: [Float] = [1, -2, 0.5, 3, 0, -1.5]
            x.withUnsafeBufferPointer { statistics.observe(input: $0.baseAddress!, tokens: 2, weight: a) }
            x.withUnsafeBufferPointer { statistics.observe(input: $0.baseAddress!, tokens: 1, weight: a) }
            x.withUnsafeBufferPointer { statistics.observe(input: $0.baseAddress!, tokens: 2, weight: other) }
            let matrix = statistics.matrix(source: .init())
            #expect(matrix.entries.keys.sorted() == ["a.weight"], "unseen and unlisted weights have no entry")
            let entry = try #require(matrix.entries["a.weight"])
            #expect(entry.tokens == 3)
            let expected: [Float] = [11.0 / 3, 8.0 / 3, 2.75 / 3]   // (1 + 9 + 1), (4 + 0 + 4), (0.25 + 2.25 + 0.25)
            #expect(entry.values == expected)
        }
    }
}
