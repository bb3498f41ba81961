import Blip2Core
import Foundation
import Testing
@testable import Blip2Convert
import Blip2Compute
@testable import Blip2Models
@testable import Blip2ModelFile

let t5FixtureModels = packageRoot.appendingPathComponent("Tests/Fixtures/models-t5")
let t5FixtureNames = ["gated-tied", "relu-untied", "gated-tied-unscaled-small-buckets"]

/// What Tools/make_t5_fixtures.py recorded from transformers for one BLIP-2 Flan-T5 model.
struct T5Reference: Decodable {
    struct Array2: Decodable { let file: String }
    struct Generation: Decodable {
        let name: String
        let new_ids: [[Int]]
        let eos_token_id: Int?
    }
    struct Task: Decodable {
        let prompt: String
        let prompt_ids: [Int]
        let inputs_embeds: Array2
        let first_step_logits: Array2
        let generations: [Generation]
    }
    struct Image: Decodable { let file: String }
    let tasks: [String: Task]
    let images: [String: Image]
    let scale_decoder_outputs: Bool

    static func directory(_ model: String) -> URL { t5FixtureModels.appendingPathComponent(model).appendingPathComponent("reference") }
    static func load(_ model: String) throws -> T5Reference {
        try JSONDecoder().decode(T5Reference.self, from: Data(contentsOf: directory(model).appendingPathComponent("reference.json")))
    }
    static func array(_ model: String, _ file: String) throws -> [Float] {
        try Numpy.read(directory(model).appendingPathComponent(file)).values
    }
}

/// Greedy ids from a session, taking the first maximum as torch.argmax does.
func greedyIds(_ session: T5Session, count: Int, eos: Int?) throws -> [Int] {
    var ids: [Int] = []
    while ids.count < count {
        let logits = session.logits
        var best = 0
        for i in 1..<logits.count where logits[i] > logits[best] { best = i }
        ids.append(best)
        if best == eos { break }
        if ids.count < count { try session.append(best) }
    }
    return ids
}

@Suite struct T5ParityTests {
    func convert(_ name: String, weights: WeightPrecision = .f32) throws -> Blip2Model {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("blip2-t5-model-tests-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let path = directory.appendingPathComponent("\(name)-\(weights.rawValue).blip2").path
        var options = ConversionOptions()
        options.weights = weights
        _ = try Converter.convert(checkpoint: t5FixtureModels.appendingPathComponent(name).appendingPathComponent("checkpoint"), output: path, options: options)
        return try Blip2Model(file: try ModelFile(path: path), compute: try ComputeContext.fromEnvironment())
    }

    /// From transformers' pixels: the encoder input (projected queries, then the prompt's `shared` rows), the
    /// first-step logits within 1e-4 of their scale, and plain greedy decoding through the decoder's cache.
    @Test(arguments: t5FixtureNames)
    func encoderInputLogitsAndGreedyIds(model name: String) throws {
        let model = try convert(name)
        #expect(model.isEncoderDecoder)
        let reference = try T5Reference.load(name)
        #expect(model.config.t5Config?.scaleDecoderOutputs == reference.scale_decoder_outputs)
        let pixels = try T5Reference.array(name, reference.images["circle.png"]!.file)
        let image = model.encodeImage(pixels: pixels)
        for (taskName, task) in reference.tasks.sorted(by: { $0.key < $1.key }) {
            let input = image + model.tokenEmbeddings(task.prompt_ids)
            let expectedInput = try T5Reference.array(name, task.inputs_embeds.file)
            #expect(maxAbsDifference(input, expectedInput) < 1e-4, "\(name) \(taskName): encoder input")

            let session = try model.makeT5Session(encoderInput: input, decoderCapacity: 32)
            let expected = try T5Reference.array(name, task.first_step_logits.file)
            let scale = expected.map(abs).max()!
            let difference = maxAbsDifference(session.logits, expected)
            #expect(difference <= 1e-4 * scale, "\(name) \(taskName): first-step logits differ by \(difference) (scale \(scale))")

            let greedy = try #require(task.generations.first { $0.name == "greedy" })
            let ids = try greedyIds(session, count: greedy.new_ids[0].count, eos: greedy.eos_token_id)
            #expect(ids == greedy.new_ids[0], "\(name) \(taskName): greedy ids")
        }
    }

    /// Buckets at the fixtures' settings, as transformers 5.24's `T5Attention._relative_position_bucket` gives
    /// them (checked there): 32 buckets over 128 (Flan-T5) and 8 over 20, around the exact/logarithmic edges.
    @Test func relativePositionBuckets() {
        // Bidirectional, 32 buckets: 16 per direction, 8 exact, then 8 + log(d / 8) / log(128 / 8) * 8.
        #expect(T5Model.bucket(0, bidirectional: true, buckets: 32, maxDistance: 128) == 0)
        #expect(T5Model.bucket(-7, bidirectional: true, buckets: 32, maxDistance: 128) == 7)
        #expect(T5Model.bucket(7, bidirectional: true, buckets: 32, maxDistance: 128) == 23)
        #expect(T5Model.bucket(-16, bidirectional: true, buckets: 32, maxDistance: 128) == 10)   // 8 + floor(2)
        #expect(T5Model.bucket(-500, bidirectional: true, buckets: 32, maxDistance: 128) == 15)
        #expect(T5Model.bucket(500, bidirectional: true, buckets: 32, maxDistance: 128) == 31)
        // Causal, 8 buckets over 20: 4 exact, then 4 + log(d / 4) / log(5) * 4; future positions are bucket 0.
        #expect(T5Model.bucket(3, bidirectional: false, buckets: 8, maxDistance: 20) == 0)
        #expect(T5Model.bucket(-3, bidirectional: false, buckets: 8, maxDistance: 20) == 3)
        #expect(T5Model.bucket(-10, bidirectional: false, buckets: 8, maxDistance: 20) == 6)   // 4 + floor(2.28)
        #expect(T5Model.bucket(-19, bidirectional: false, buckets: 8, maxDistance: 20) == 7)
    }
}
