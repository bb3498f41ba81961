import Blip2Core
import Blip2Generation
import Foundation
import Testing
@testable import Blip2Convert
@testable import Blip2Pipeline

let t5FixtureModels = packageRoot.appendingPathComponent("Tests/Fixtures/models-t5")
let t5FixtureNames = ["gated-tied", "relu-untied", "gated-tied-unscaled-small-buckets"]

/// The parts of Tools/make_t5_fixtures.py's reference.json these tests use.
struct T5Reference: Decodable {
    struct Task: Decodable {
        let prompt: String
        let prompt_ids: [Int]
        let input_ids: [Int]
        let generations: [Reference.Generation]
    }
    struct Image: Decodable { let file: String }
    let tasks: [String: Task]
    let images: [String: Image]

    static func directory(_ model: String) -> URL { t5FixtureModels.appendingPathComponent(model).appendingPathComponent("reference") }
    static func load(_ model: String) throws -> T5Reference {
        try JSONDecoder().decode(T5Reference.self, from: Data(contentsOf: directory(model).appendingPathComponent("reference.json")))
    }
    func pixels(_ model: String, image: String = "circle.png") throws -> [Float] {
        try Numpy.read(Self.directory(model).appendingPathComponent(images[image]!.file)).values
    }
}

extension Pipelines {
    func t5(_ name: String, weights: WeightPrecision = .f32) throws -> Pipeline {
        try pipeline(name, weights: weights, fixtures: t5FixtureModels)
    }
}

@Suite struct T5PipelineTests {
    /// Every task's prompt ids, and every recorded decoding (greedy, repetition penalty, n-gram blocking, beam
    /// search with its variants) token for token and text for text, from transformers' own pixels.
    @Test(arguments: t5FixtureNames)
    func everyTaskAndDecodingMatches(model name: String) throws {
        let pipeline = try Pipelines.shared.t5(name)
        let reference = try T5Reference.load(name)
        let image = pipeline.encode(pixels: try reference.pixels(name))
        for (taskName, task) in reference.tasks.sorted(by: { $0.key < $1.key }) {
            #expect(pipeline.promptIds(task.prompt) == task.prompt_ids, "\(name) \(taskName): prompt ids")
            #expect(pipeline.contextIds(promptIds: task.prompt_ids) == task.input_ids, "\(name) \(taskName): the processor's input ids")
            for generation in task.generations {
                let result = try pipeline.generate(image: image, prompt: task.prompt, options: generation.options())
                #expect(result.sequences.map(\.tokens) == generation.new_ids_trimmed, "\(name) \(taskName) \(generation.name)")
                #expect(result.texts == generation.text, "\(name) \(taskName) \(generation.name): text")
            }
        }
    }

    /// The fixtures' chat prompt is the walkthrough's, and a chat session's third turn answers what a fresh
    /// generation of that prompt answers.
    @Test func chatTurnsAreConcatenated() throws {
        let name = "gated-tied"
        let pipeline = try Pipelines.shared.t5(name)
        let reference = try T5Reference.load(name)
        let history = [(question: "what is in the picture?", answer: "a red circle"), (question: "what shape is it?", answer: "a circle")]
        let chatTask = try #require(reference.tasks["chat"])
        #expect(Prompts.chat(history: history, question: "is it large?") == chatTask.prompt)
        let image = pipeline.encode(pixels: try reference.pixels(name))
        var options = GenerationOptions()
        options.maxNewTokens = 6
        let chat = ChatSession(pipeline: pipeline, image: image)
        var asked: [(question: String, answer: String)] = []
        for question in ["what is in the picture?", "what shape is it?", "is it large?"] {
            let turn = try chat.ask(question, options: options)
            let fresh = try pipeline.generate(image: image, prompt: Prompts.chat(history: asked, question: question), options: options)
            #expect(turn.result.sequences.map(\.tokens) == fresh.sequences.map(\.tokens))
            #expect(turn.result.promptIds == fresh.promptIds)
            asked.append((question, turn.result.text))
        }
    }

    /// The encoder's 512 positions hold the image embeddings and the prompt; the new tokens live in the decoder,
    /// so a long answer never pushes turns out, while a long history does.
    @Test func chatDropsOldestTurnsToFitTheEncoder() throws {
        let pipeline = try Pipelines.shared.t5("relu-untied")
        let reference = try T5Reference.load("relu-untied")
        let image = pipeline.encode(pixels: try reference.pixels("relu-untied"))
        var options = GenerationOptions()
        options.maxNewTokens = 40
        let chat = ChatSession(pipeline: pipeline, image: image)
        var dropped = 0
        for _ in 0..<12 {
            let turn = try chat.ask("what color is the circle in the picture on the left side?", options: options)
            dropped += turn.droppedTurns
            #expect(pipeline.numQueryTokens + turn.result.promptIds.count <= pipeline.contextLimit)
        }
        #expect(dropped > 0)
        #expect(throws: PipelineError.self) { try chat.ask(String(repeating: "why ", count: 600), options: options) }
        // The decoder's cache is sized by the new tokens, so they are bounded too.
        options.maxNewTokens = pipeline.contextLimit
        #expect { try chat.ask("what is it?", options: options) } throws: { "\($0)".contains("decoder") }
        options.maxNewTokens = pipeline.contextLimit - 1
        #expect(try chat.ask("what is it?", options: options).result.sequences[0].tokens.count == pipeline.contextLimit - 1)
    }

    /// Quantized files run the same model. q8 stays within a third of the f32 logits' spread (the OPT fixtures
    /// meet a quarter, QuantizationDriftTests; on "gated-tied" the scalar reference path itself is at 0.99 of a
    /// quarter, and a kernel path whose float sums round otherwise moves the largest difference by a few
    /// percent, as when an activation lands on the other side of a rounding step); q4k gives finite logits and
    /// beam search runs on it.
    @Test(arguments: t5FixtureNames)
    func quantizedSmokeRun(model name: String) throws {
        let reference = try T5Reference.load(name)
        let exact = try Pipelines.shared.t5(name)
        let pixels = try reference.pixels(name)
        let task = try #require(reference.tasks["vqa"])
        let f32 = try exact.stepLogits(image: exact.encode(pixels: pixels), promptIds: task.prompt_ids, tokens: [0])
        let mean = f32.reduce(0, +) / Float(f32.count)
        let spread = (f32.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(f32.count)).squareRoot()
        for weights in [WeightPrecision.q8, .q4k] {
            let pipeline = try Pipelines.shared.t5(name, weights: weights)
            let image = pipeline.encode(pixels: pixels)
            let ours = try pipeline.stepLogits(image: image, promptIds: task.prompt_ids, tokens: [0])
            #expect(ours.allSatisfy { $0.isFinite })
            let difference = zip(ours, f32).map { abs($0 - $1) }.max()!
            if weights == .q8 { #expect(difference < spread / 3, "\(name) q8: logits differ by \(difference), spread \(spread)") }
            var options = GenerationOptions()
            options.maxNewTokens = 3
            options.numBeams = 2
            let beams = try pipeline.generate(image: image, prompt: task.prompt, options: options)
            #expect(beams.sequences[0].tokens.count == 3)
        }
    }
}
