import Foundation
import Testing
@testable import Blip2Tokenizer

/// The tokenizer each tiny BLIP-2 Flan-T5 checkpoint carries (Tools/make_t5_fixtures.py), with `<image>` added
/// as `Blip2Processor` adds it, gives the input ids the processor fed the model, and the texts transformers
/// decoded from what the model generated.
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
            var inputIds: [Int]
            var promptIds: [Int]
            var generations: [Generation]
            enum CodingKeys: String, CodingKey {
                case prompt, generations
                case inputIds = "input_ids", promptIds = "prompt_ids"
            }
        }
        struct SpecialIds: Decodable {
            var image: Int
            var tokenizerSize: Int
            enum CodingKeys: String, CodingKey {
                case image
                case tokenizerSize = "tokenizer_size"
            }
        }
        struct Spec: Decodable {
            var numQueryTokens: Int
            enum CodingKeys: String, CodingKey {
                case numQueryTokens = "num_query_tokens"
            }
        }
        var tasks: [String: Task]
        var specialIds: SpecialIds
        var spec: Spec
        enum CodingKeys: String, CodingKey {
            case tasks, spec
            case specialIds = "special_ids"
        }
    }

    static let root = TestPaths.packageRoot.appendingPathComponent("Tests/Fixtures/models-t5")

    static let models: [String] = {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
        return names.filter { FileManager.default.fileExists(atPath: root.appendingPathComponent("\($0)/reference/reference.json").path) }.sorted()
    }()

    /// The image token must land where the model expects it, or loading fails.
    @Test func imageTokenAtAnotherIdIsRefusedOrPlaced() throws {
        let checkpoint = Self.root.appendingPathComponent("gated-tied/checkpoint")
        #expect(throws: TokenizerError.self) { try T5Tokenizer(try T5TokenizerData.load(huggingFaceFolder: checkpoint, imageTokenIndex: 5)) }
        let placed = try T5Tokenizer(try T5TokenizerData.load(huggingFaceFolder: checkpoint, imageTokenIndex: 630))
        #expect(placed.imageTokenId == 630 && placed.id(for: "<image>") == 630 && placed.isSpecial(630))
        #expect(placed.encode("a <image> b", addSpecialTokens: false).contains(630))
        var without = try T5TokenizerData.load(huggingFaceFolder: checkpoint)
        without.imageToken = nil
        #expect(throws: TokenizerError.noImageToken) { try T5Tokenizer(without).encode("a", imageTokenCount: 2) }
    }

    @Test func fixturesArePresent() {
        #expect(Self.models.count >= 3, "no BLIP-2 Flan-T5 fixtures in \(Self.root.path)")
    }

    @Test(arguments: models)
    func promptIdsAndDecodedTextsMatch(model: String) throws {
        let folder = Self.root.appendingPathComponent(model)
        let data = try Data(contentsOf: folder.appendingPathComponent("reference/reference.json"))
        let reference = try JSONDecoder().decode(Reference.self, from: data)
        let tokenizer = try T5Tokenizer(try T5TokenizerData.load(
            huggingFaceFolder: folder.appendingPathComponent("checkpoint"), imageTokenIndex: reference.specialIds.image))
        #expect(tokenizer.imageTokenId == reference.specialIds.image)
        #expect(tokenizer.vocabularySize == reference.specialIds.tokenizerSize)
        #expect(reference.tasks.count == 4)
        for (name, task) in reference.tasks {
            #expect(tokenizer.encode(task.prompt) == task.promptIds, "\(model) \(name)")
            #expect(try tokenizer.encode(task.prompt, imageTokenCount: reference.spec.numQueryTokens) == task.inputIds, "\(model) \(name)")
            for generation in task.generations {
                for (ids, text) in zip(generation.newIdsTrimmed, generation.text) {
                    let decoded = OPTTokenizer.stripPythonWhitespace(tokenizer.decode(ids, skipSpecialTokens: true))
                    #expect(decoded == text, "\(model) \(name) \(generation.name)")
                }
            }
        }
    }
}
