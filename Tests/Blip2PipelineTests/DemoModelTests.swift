import Blip2Compute
import Blip2Generation
import Blip2ModelFile
import Foundation
import Testing
@testable import Blip2Pipeline

/// Models/examples/examples.json (Tools/make_demo_examples.py): each example image with the caption and
/// answers of the scene it was drawn from, the ground truth of Tools/scenes.py.
struct DemoExamples: Decodable {
    struct Question: Decodable {
        let kind: String
        let question: String
        let prompt: String
        let answer: String
    }
    struct Chat: Decodable {
        let questions: [String]
        let answers: [String]
    }
    struct Example: Decodable {
        let file: String
        let caption: String
        let questions: [Question]
        let chat: Chat
    }
    let examples: [Example]
}

/// The bundled demo model on its bundled examples, exactly as the README's quick start runs it.
@Suite struct DemoModelTests {
    static let models = packageRoot.appendingPathComponent("Models")

    static func encode(_ example: DemoExamples.Example, with pipeline: Pipeline) throws -> EncodedImage {
        try pipeline.encodeImage(contentsOf: models.appendingPathComponent("examples").appendingPathComponent(example.file))
    }

    func load() throws -> (Pipeline, DemoExamples) {
        let pipeline = try Pipeline(modelPath: Self.models.appendingPathComponent("demo-q8.blip2").path)
        let examples = try JSONDecoder().decode(DemoExamples.self, from: Data(contentsOf: Self.models.appendingPathComponent("examples/examples.json")))
        return (pipeline, examples)
    }

    /// The bundled file is what `blip2-quantize --weights q8` writes today (Tools/dequantize_model.py
    /// brought it over from the first converter, value for value): every linear weight whose rows come in
    /// eights is a q8 panel, so the demo runs the products users get.
    @Test func isWhatTheConverterWritesToday() throws {
        let file = try ModelFile(path: Self.models.appendingPathComponent("demo-q8.blip2").path)
        #expect(file.formatVersion >= 2)
        let linear = file.tensors.filter { $0.name.hasSuffix(".weight") && !$0.name.contains("embed") && $0.shape.count == 2 && $0.shape[0] % 8 == 0 }
        #expect(linear.count > 50)
        for tensor in linear { #expect(tensor.type == .q8p, "\(tensor.name) is \(tensor.type.name)") }
    }

    @Test func captionsEveryExampleCorrectly() throws {
        let (pipeline, demo) = try load()
        #expect(demo.examples.count >= 4)
        for example in demo.examples {
            let image = try Self.encode(example, with: pipeline)
            let caption = try pipeline.generate(image: image, prompt: nil, options: GenerationOptions())
            #expect(caption.text == example.caption, "\(example.file)")
        }
    }

    @Test func answersEveryExampleQuestionCorrectly() throws {
        let (pipeline, demo) = try load()
        var options = GenerationOptions()
        options.maxNewTokens = 10
        for example in demo.examples {
            let image = try Self.encode(example, with: pipeline)
            #expect(Set(example.questions.map(\.kind)) == ["color", "shape", "count", "position"])
            for question in example.questions {
                let answer = try pipeline.generate(image: image, prompt: question.prompt, options: options)
                #expect(answer.text == question.answer, "\(example.file): \(question.prompt)")
            }
        }
    }

    /// Two turns, the second asked with the first question and answer in its prompt.
    @Test func chatsAboutEveryExample() throws {
        let (pipeline, demo) = try load()
        var options = GenerationOptions()
        options.maxNewTokens = 10
        for example in demo.examples {
            let image = try Self.encode(example, with: pipeline)
            let chat = ChatSession(pipeline: pipeline, image: image)
            #expect(example.chat.questions.count == example.chat.answers.count)
            for (question, answer) in zip(example.chat.questions, example.chat.answers) {
                let turn = try chat.ask(question, options: options)
                #expect(turn.result.text == answer, "\(example.file): \(question)")
            }
        }
    }

    /// Two pipelines in one process, each on its own compute context, caption at the same time from two
    /// threads (and then sharing one context): every caption is the ground truth, as when run alone.
    @Test func twoPipelinesInOneProcess() throws {
        let demo = try load().1
        let path = Self.models.appendingPathComponent("demo-q8.blip2").path
        let shared = try ComputeContext.fromEnvironment(threads: 2)
        for contexts in [[try ComputeContext.fromEnvironment(threads: 2), try ComputeContext.fromEnvironment(threads: 2)], [shared, shared]] {
            let pipelines = try contexts.map { try Pipeline(modelPath: path, compute: $0) }
            let wrong = Locked(0), done = Locked(0)
            DispatchQueue.concurrentPerform(iterations: 2) { side in
                for example in demo.examples {
                    guard let image = try? Self.encode(example, with: pipelines[side]),
                          let caption = try? pipelines[side].generate(image: image, prompt: nil, options: GenerationOptions()) else {
                        wrong.update { $0 += 1 }
                        continue
                    }
                    if caption.text != example.caption { wrong.update { $0 += 1 } }
                    done.update { $0 += 1 }
                }
            }
            #expect(wrong.value == 0 && done.value == 2 * demo.examples.count)
        }
    }
}

/// A value behind a lock (tests only).
final class Locked<Value>: @unchecked Sendable {
    private var stored: Value
    private let lock = NSLock()
    init(_ value: Value) { stored = value }
    var value: Value { lock.lock(); defer { lock.unlock() }; return stored }
    func update(_ body: (inout Value) -> Void) { lock.lock(); defer { lock.unlock() }; body(&stored) }
}
