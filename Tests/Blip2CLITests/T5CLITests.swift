import Foundation
import Testing

/// A BLIP-2 Flan-T5 checkpoint through the same commands and flags as OPT: convert, inspect, caption, ask,
/// chat, tokenize, with the ids transformers' generate gives (Tests/Fixtures/models-t5).
@Suite struct T5CLITests {
    static let fixture = packageRoot.appendingPathComponent("Tests/Fixtures/models-t5/relu-untied")

    func reference() throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: Self.fixture.appendingPathComponent("reference/reference.json"))) as! [String: Any]
    }

    /// The greedy ids transformers recorded for a task.
    func greedyIds(_ task: String) throws -> [Int] {
        let tasks = try reference()["tasks"] as! [String: [String: Any]]
        let generations = tasks[task]!["generations"] as! [[String: Any]]
        return (generations.first { $0["name"] as? String == "greedy" }!["new_ids_trimmed"] as! [[Int]])[0]
    }

    @Test func convertInspectCaptionAskChat() throws {
        let scratch = Scratch()
        let model = scratch.path("t5.blip2")
        let convert = try quantize.run([Self.fixture.appendingPathComponent("checkpoint").path, "--output", model, "--weights", "f32"])
        #expect(convert.status == 0, "\(convert.stderr)")

        let inspect = try blip2.run(["inspect", model])
        #expect(inspect.status == 0, "\(inspect.stderr)")
        #expect(inspect.stdout.contains("language    T5 encoder 3 + decoder 3 layers x 48, 2 heads x 12, ff 80 relu"))
        #expect(inspect.stdout.contains("tied head false"))
        #expect(inspect.stdout.contains("SentencePiece Unigram, <image> = 600"))

        let image = fixtureModels.appendingPathComponent("images/circle.png").path
        let caption = try blip2.run(["caption", model, image, "--json"])
        #expect(caption.status == 0, "\(caption.stderr)")
        let captionJSON = try JSONSerialization.jsonObject(with: Data(caption.stdout.utf8)) as! [String: Any]
        #expect(captionJSON["token_ids"] as? [Int] == (try greedyIds("caption")))
        #expect(captionJSON["prompt_ids"] as? [Int] == [1])

        let ask = try blip2.run(["ask", model, image, "what color is the circle?", "--json"])
        #expect(ask.status == 0, "\(ask.stderr)")
        let askJSON = try JSONSerialization.jsonObject(with: Data(ask.stdout.utf8)) as! [String: Any]
        #expect(askJSON["token_ids"] as? [Int] == (try greedyIds("vqa")))

        let tokenize = try blip2.run(["tokenize", model, "a photo of"])
        let tasks = try reference()["tasks"] as! [String: [String: Any]]
        #expect(tokenize.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == (tasks["prompted"]!["prompt_ids"] as! [Int]).map(String.init).joined(separator: " "))

        let chat = try blip2.run(["chat", model, image], input: Data("what is in the picture?\nwhat shape is it?\n".utf8))
        #expect(chat.status == 0, "\(chat.stderr)")
    }

    @Test func overlongQuestionIsRefusedClearly() throws {
        let scratch = Scratch()
        let model = scratch.path("t5.blip2")
        _ = try quantize.run([Self.fixture.appendingPathComponent("checkpoint").path, "--output", model, "--weights", "q8"])
        let image = fixtureModels.appendingPathComponent("images/circle.png").path
        let ask = try blip2.run(["ask", model, image, String(repeating: "why ", count: 600)])
        #expect(ask.status != 0)
        #expect(ask.stderr.contains("512-token context") && ask.stderr.contains("shorten it"), "\(ask.stderr)")
    }
}
