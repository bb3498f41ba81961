import Foundation
import Testing
@testable import Blip2Tokenizer

/// The tokenizer each tiny BLIP-2 Flan-T5 checkpoint carries (Tools/make_t5_fixtures.py) gives the prompt ids
/// `Blip2Processor` fed the model, and the texts transformers decoded from what the model generated.
@Suite("T5 tokenizer on the BLIP-2 Flan-T5 fixtures")
struct T5ModelFixtureTests {
    struct Reference: Decodable {
        struct Task: Decodable {
            struct Generation: Decodable {
                var name: String
                var newIdsTrimmed: [[Int]]
                var text: [String]
                enum CodingKeys: String, CodingKey {
                    case name, text
                    case newIdsTrimmed = "new_ids_trimmed"
                }
            }
            var prompt: String
            var promptIds: [Int]
            var generations: [Generation]
            enum CodingKeys: String, CodingKey {
                case prompt, generations
                case promptIds = "prompt_ids"
            }
        }
        var tasks: [String: Task]
    }

    static let root = TestPaths.packageRoot.appendingPathComponent("Tests/Fixtures/models-t5")

    static let models: [String] = {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
        return names.filter { FileManager.default.fileExists(atPath: root.appendingPathComponent("\($0)/reference/reference.json").path) }.sorted()
    }()

    @Test func fixturesArePresent() {
        #expect(Self.models.count >= 3, "no BLIP-2 Flan-T5 fixtures in \(Self.root.path)")
    }

    @Test(arguments: models)
    func promptIdsAndDecodedTextsMatch(model: String) throws {
        let folder = Self.root.appendingPathComponent(model)
        let tokenizer = try T5Tokenizer(try T5TokenizerData.load(huggingFaceFolder: folder.appendingPathComponent("checkpoint")))
        let data = try Data(contentsOf: folder.appendingPathComponent("reference/reference.json"))
        let reference = try JSONDecoder().decode(Reference.self, from: data)
        #expect(reference.tasks.count == 4)
        for (name, task) in reference.tasks {
            #expect(tokenizer.encode(task.prompt) == task.promptIds, "\(model) \(name)")
            for generation in task.generations {
                for (ids, text) in zip(generation.newIdsTrimmed, generation.text) {
                    let decoded = OPTTokenizer.stripPythonWhitespace(tokenizer.decode(ids, skipSpecialTokens: true))
                    #expect(decoded == text, "\(model) \(name) \(generation.name)")
                }
            }
        }
    }
}
