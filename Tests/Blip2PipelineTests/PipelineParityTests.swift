import Blip2Core
import Blip2Generation
import Foundation
import Testing
@testable import Blip2Convert
@testable import Blip2Pipeline

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let fixtureModels = packageRoot.appendingPathComponent("Tests/Fixtures/models")
let fixtureNames = ["base-f32", "bf16-sharded-untied", "deep-f16-tied", "f16-noqkvbias-eos2", "legacy-4x-f32",
                    "odd-hidden-f32", "sharded-untied-f32"]

/// The parts of Tools/make_fixtures.py's reference.json these tests use.
struct Reference: Decodable {
    struct Settings: Decodable {
        let max_new_tokens: Int?
        let min_new_tokens: Int?
        let num_beams: Int?
        let length_penalty: Double?
        let early_stopping: EarlyStoppingValue?
        let no_repeat_ngram_size: Int?
        let num_return_sequences: Int?
        let repetition_penalty: Double?
    }
    enum EarlyStoppingValue: Decodable {
        case flag(Bool), never
        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let b = try? c.decode(Bool.self) { self = .flag(b) } else { self = .never }
        }
    }
    struct Generation: Decodable {
        let name: String
        let settings: Settings
        let new_ids_trimmed: [[Int]]
        let text: [String]
        let eos_token_id: Int?
        let pad_token_id: Int?
    }
    struct Task: Decodable {
        let prompt: String?
        let prompt_ids: [Int]
        let input_ids: [Int]
        let generations: [Generation]
    }
    struct Image: Decodable {
        struct File: Decodable { let file: String }
        let pixel_values: File
    }
    struct Activations: Decodable { let image: String }
    let tasks: [String: Task]
    let images: [String: Image]
    let activations: Activations

    static func load(_ model: String) throws -> Reference {
        try JSONDecoder().decode(Reference.self, from: Data(contentsOf: directory(model).appendingPathComponent("reference.json")))
    }
    static func directory(_ model: String) -> URL { fixtureModels.appendingPathComponent(model).appendingPathComponent("reference") }
}

extension Reference.Generation {
    func options() -> GenerationOptions {
        var o = GenerationOptions()
        o.maxNewTokens = settings.max_new_tokens ?? 20
        o.minNewTokens = settings.min_new_tokens ?? 0
        o.numBeams = settings.num_beams ?? 1
        o.lengthPenalty = settings.length_penalty ?? 1
        switch settings.early_stopping {
        case .flag(true): o.earlyStopping = .always
        case .never: o.earlyStopping = .never
        default: o.earlyStopping = .heuristic
        }
        o.noRepeatNgramSize = settings.no_repeat_ngram_size ?? 0
        o.numReturnSequences = settings.num_return_sequences ?? 1
        o.repetitionPenalty = settings.repetition_penalty ?? 1
        o.eosTokenId = eos_token_id
        o.padTokenId = pad_token_id
        return o
    }
}

/// Pipelines over f32 conversions of the fixtures, made once per process.
final class Pipelines: @unchecked Sendable {
    static let shared = Pipelines()
    private let lock = NSLock()
    private var cache: [String: Pipeline] = [:]
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("blip2-pipeline-tests-\(getpid())")

    /// `fixtures`: the OPT models, or the Flan-T5 ones (Tests/Fixtures/models-t5).
    func pipeline(_ name: String, weights: WeightPrecision = .f32, fixtures: URL = fixtureModels) throws -> Pipeline {
        lock.lock()
        defer { lock.unlock() }
        // The fixture names of the two folders differ; the file name is what CalibrationTests opens.
        let key = "\(name)-\(weights.rawValue)"
        if let pipeline = cache[key] { return pipeline }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let path = directory.appendingPathComponent("\(key).blip2").path
        var options = ConversionOptions()
        options.weights = weights
        _ = try Converter.convert(checkpoint: fixtures.appendingPathComponent(name).appendingPathComponent("checkpoint"), output: path, options: options)
        let pipeline = try Pipeline(modelPath: path)
        cache[key] = pipeline
        return pipeline
    }
}

func referencePixels(_ model: String, _ reference: Reference) throws -> [Float] {
    let file = reference.images[reference.activations.image]!.pixel_values.file
    return try Numpy.read(Reference.directory(model).appendingPathComponent(file)).values
}

@Suite struct PipelineParityTests {
    /// Every task's prompt ids and every recorded decoding (greedy, penalties, n-gram blocking, beam search
    /// with its variants) equal transformers' token for token, from transformers' own pixels.
    @Test(arguments: fixtureNames)
    func everyTaskAndDecodingMatches(model name: String) throws {
        let pipeline = try Pipelines.shared.pipeline(name)
        let reference = try Reference.load(name)
        let image = pipeline.encode(pixels: try referencePixels(name, reference))
        for (taskName, task) in reference.tasks.sorted(by: { $0.key < $1.key }) {
            #expect(pipeline.promptIds(task.prompt) == task.prompt_ids, "\(name) \(taskName): prompt ids")
            #expect(pipeline.contextIds(promptIds: task.prompt_ids) == task.input_ids, "\(name) \(taskName): context ids")
            for generation in task.generations {
                let result = try pipeline.generate(image: image, prompt: task.prompt, options: generation.options())
                #expect(result.sequences.map(\.tokens) == generation.new_ids_trimmed, "\(name) \(taskName) \(generation.name)")
                #expect(result.texts == generation.text, "\(name) \(taskName) \(generation.name): text")
            }
        }
    }

    @Test func chatPromptIsBuiltAsTheWalkthroughDoes() throws {
        let reference = try Reference.load("base-f32")
        let prompt = Prompts.chat(history: [(question: "what is in the picture?", answer: "a red circle")], question: "what color is the background?")
        #expect(prompt == reference.tasks["chat"]!.prompt)
        #expect(Prompts.chat(history: [], question: "what is it?") == "Question: what is it? Answer:")
    }

    /// Reusing the KV cache across chat turns gives exactly what a fresh run of the full prompt gives.
    @Test func chatReusesTheCacheWithoutChangingAnswers() throws {
        let pipeline = try Pipelines.shared.pipeline("deep-f16-tied")
        let reference = try Reference.load("deep-f16-tied")
        let image = pipeline.encode(pixels: try referencePixels("deep-f16-tied", reference))
        var options = GenerationOptions()
        options.maxNewTokens = 6
        let chat = ChatSession(pipeline: pipeline, image: image)
        var history: [(question: String, answer: String)] = []
        for (i, question) in ["what is in the picture?", "what color is it?", "is it round?"].enumerated() {
            let turn = try chat.ask(question, options: options)
            let fresh = try pipeline.generate(image: image, prompt: Prompts.chat(history: history, question: question), options: options)
            #expect(turn.result.sequences.map(\.tokens) == fresh.sequences.map(\.tokens), "turn \(i)")
            #expect(turn.result.promptIds == fresh.promptIds)
            if i > 0 { #expect(turn.reusedIds > 1, "turn \(i) reused the shared prefix") }
            history.append((question, turn.result.text))
        }
    }

    @Test func chatDropsOldestTurnsToFitTheContext() throws {
        let pipeline = try Pipelines.shared.pipeline("base-f32")   // 128 positions
        let reference = try Reference.load("base-f32")
        let image = pipeline.encode(pixels: try referencePixels("base-f32", reference))
        var options = GenerationOptions()
        options.maxNewTokens = 4
        let chat = ChatSession(pipeline: pipeline, image: image)
        var dropped = 0
        for _ in 0..<12 {
            let turn = try chat.ask("what color is the circle in the picture?", options: options)
            dropped += turn.droppedTurns
            #expect(pipeline.numQueryTokens + turn.result.promptIds.count + options.maxNewTokens <= pipeline.contextLimit)
        }
        #expect(dropped > 0)
        let long = String(repeating: "why ", count: 200)
        #expect(throws: PipelineError.self) { try chat.ask(long, options: options) }
    }

    @Test func samplingIsReproducibleForASeed() throws {
        let pipeline = try Pipelines.shared.pipeline("base-f32")
        let image = pipeline.encode(pixels: try referencePixels("base-f32", try Reference.load("base-f32")))
        var options = GenerationOptions()
        options.doSample = true
        options.temperature = 1.5
        options.maxNewTokens = 12
        options.eosTokenId = nil
        var outputs: [[Int]] = []
        for seed: UInt64 in [1, 1, 2, 3, 4] {
            options.seed = seed
            outputs.append(try pipeline.generate(image: image, prompt: nil, options: options).sequences[0].tokens)
        }
        #expect(outputs[0] == outputs[1])
        #expect(Set(outputs.dropFirst()).count > 1, "different seeds give different samples")
    }

    @Test func promptBeyondTheContextIsRefused() throws {
        let pipeline = try Pipelines.shared.pipeline("base-f32")
        let image = pipeline.encode(pixels: try referencePixels("base-f32", try Reference.load("base-f32")))
        #expect { try pipeline.generate(image: image, prompt: String(repeating: "circle ", count: 300), options: GenerationOptions()) } throws: {
            "\($0)".contains("context")
        }
    }

    /// Image files through our decoder and processor give the pixels transformers' processor gave.
    @Test(arguments: ["base-f32", "sharded-untied-f32", "f16-noqkvbias-eos2"])
    func pixelsFromImageFiles(model name: String) throws {
        let pipeline = try Pipelines.shared.pipeline(name)
        let reference = try Reference.load(name)
        for (file, image) in reference.images {
            var timings = StageTimings()
            let ours = try pipeline.pixels(contentsOf: fixtureModels.appendingPathComponent("images").appendingPathComponent(file), timings: &timings)
            let theirs = try Numpy.read(Reference.directory(name).appendingPathComponent(image.pixel_values.file)).values
            #expect(ours.count == theirs.count)
            let differences = zip(ours, theirs).map { abs($0 - $1) }
            #expect(differences.max()! < 1e-5, "\(name) \(file)")
        }
    }
}
