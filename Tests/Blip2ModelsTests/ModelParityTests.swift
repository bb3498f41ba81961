import Blip2Core
import Foundation
import Testing
@testable import Blip2Convert
import Blip2Compute
@testable import Blip2Models
@testable import Blip2ModelFile

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let fixtureModels = packageRoot.appendingPathComponent("Tests/Fixtures/models")
let fixtureNames = ["base-f32", "bf16-sharded-untied", "deep-f16-tied", "f16-noqkvbias-eos2", "legacy-4x-f32",
                    "odd-hidden-f32", "sharded-untied-f32"]

/// What Tools/make_fixtures.py recorded from transformers for one model.
struct Reference: Decodable {
    struct Activation: Decodable { let file: String; let shape: [Int] }
    struct Activations: Decodable {
        let image: String
        let vision_last_hidden_state: Activation
        let qformer_last_hidden_state: Activation
        let language_projection: Activation
    }
    struct Generation: Decodable {
        let name: String
        let new_ids: [[Int]]
        let eos_token_id: Int?
    }
    struct Task: Decodable {
        let prompt: String?
        let input_ids: [Int]
        let prompt_ids: [Int]
        let inputs_embeds: Activation
        let first_step_logits: Activation
        let generations: [Generation]
    }
    let activations: Activations
    let tasks: [String: Task]

    let directory: URL
    enum CodingKeys: String, CodingKey { case activations, tasks }
    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        activations = try c.decode(Activations.self, forKey: .activations)
        tasks = try c.decode([String: Task].self, forKey: .tasks)
        directory = URL(fileURLWithPath: "/")
    }
    init(activations: Activations, tasks: [String: Task], directory: URL) {
        self.activations = activations
        self.tasks = tasks
        self.directory = directory
    }

    static func load(_ model: String) throws -> Reference {
        let directory = fixtureModels.appendingPathComponent(model).appendingPathComponent("reference")
        let decoded = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: directory.appendingPathComponent("reference.json")))
        return Reference(activations: decoded.activations, tasks: decoded.tasks, directory: directory)
    }

    func array(_ name: String) throws -> [Float] { try Numpy.read(directory.appendingPathComponent(name)).values }
    func pixels(image: String) throws -> [Float] {
        try array("pixel_values_" + URL(fileURLWithPath: image).deletingPathExtension().lastPathComponent + ".npy")
    }
}

/// A converted model file for a fixture, made once per process and precision.
final class ConvertedModels: @unchecked Sendable {
    static let shared = ConvertedModels()
    private let lock = NSLock()
    private var models: [String: Blip2Model] = [:]
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("blip2-model-tests-\(getpid())")

    func model(_ name: String, weights: WeightPrecision = .f32) throws -> Blip2Model {
        lock.lock()
        defer { lock.unlock() }
        let key = "\(name)-\(weights.rawValue)"
        if let model = models[key] { return model }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let path = directory.appendingPathComponent("\(key).blip2").path
        var options = ConversionOptions()
        options.weights = weights
        _ = try Converter.convert(checkpoint: fixtureModels.appendingPathComponent(name).appendingPathComponent("checkpoint"), output: path, options: options)
        let model = try Blip2Model(file: try ModelFile(path: path), compute: try ComputeContext.fromEnvironment())
        models[key] = model
        return model
    }
}

func maxAbsDifference(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count, "sizes differ: \(a.count) vs \(b.count)")
    return zip(a, b).map { abs($0 - $1) }.max() ?? 0
}

/// Stage by stage against transformers, given transformers' own pixels, at f32.
@Suite struct ModelParityTests {
    @Test(arguments: fixtureNames)
    func stagesMatchTransformers(model name: String) throws {
        let model = try ConvertedModels.shared.model(name)
        let reference = try Reference.load(name)
        let pixels = try reference.pixels(image: reference.activations.image)
        let vision = model.visionForward(pixels: pixels)
        #expect(maxAbsDifference(vision, try reference.array(reference.activations.vision_last_hidden_state.file)) < 1e-4)
        let qformer = model.qformerForward(imageStates: try reference.array(reference.activations.vision_last_hidden_state.file))
        #expect(maxAbsDifference(qformer, try reference.array(reference.activations.qformer_last_hidden_state.file)) < 1e-4)
        let projected = model.project(queryStates: try reference.array(reference.activations.qformer_last_hidden_state.file))
        #expect(maxAbsDifference(projected, try reference.array(reference.activations.language_projection.file)) < 1e-4)
    }

    @Test(arguments: fixtureNames)
    func firstStepLogitsAndGreedyIds(model name: String) throws {
        let model = try ConvertedModels.shared.model(name)
        let reference = try Reference.load(name)
        let image = try reference.array(reference.activations.language_projection.file)
        for (task, expected) in reference.tasks.sorted(by: { $0.key < $1.key }) {
            let session = model.makeSession()
            try session.feed(embeddings: image)
            try session.feed(tokens: expected.prompt_ids)
            let logits = try reference.array(expected.first_step_logits.file)
            let difference = maxAbsDifference(session.logits, logits)
            #expect(difference < 1e-4, "\(name) \(task): first-step logits differ by \(difference)")

            // Plain greedy decoding, the simplest end-to-end check of the KV cache path.
            guard let greedy = expected.generations.first(where: { $0.name == "greedy" }) else { continue }
            let want = greedy.new_ids[0]
            var got: [Int] = []
            while got.count < want.count {
                let next = session.logits.indices.max { session.logits[$0] < session.logits[$1] || (session.logits[$0] == session.logits[$1] && $0 > $1) }!
                got.append(next)
                if next == greedy.eos_token_id { break }
                try session.feed(tokens: [next])
            }
            #expect(got == want, "\(name) \(task): greedy ids")
        }
    }

    @Test func inputEmbeddingsMatch() throws {
        let model = try ConvertedModels.shared.model("base-f32")
        let reference = try Reference.load("base-f32")
        let task = try #require(reference.tasks["vqa"])
        let embeds = try reference.array(task.inputs_embeds.file)
        let image = try reference.array(reference.activations.language_projection.file)
        let ours = image + model.tokenEmbeddings(task.prompt_ids)
        #expect(maxAbsDifference(ours, embeds) < 1e-5)
    }
}
