import Blip2Generation
import Foundation
import Testing
@testable import Blip2Pipeline

/// The `--json` record of caption, ask and chat: field names and which fields appear when.
@Suite struct GenerationRecordTests {
    static func object(_ record: GenerationRecord) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: JSONEncoder().encode(record)) as! [String: Any]
    }

    static func result(_ sequences: [GeneratedSequence], texts: [String]) -> Pipeline.Result {
        var timings = StageTimings()
        timings.vision = 12.5
        timings.total = 40
        return Pipeline.Result(sequences: sequences, promptIds: [2, 68, 309], timings: timings, texts: texts)
    }

    @Test func oneSequence() throws {
        let result = Self.result([GeneratedSequence(tokens: [5, 6, 202], score: nil, finishedByEOS: true)], texts: ["a dog"])
        let object = try Self.object(GenerationRecord(task: .promptedCaption, image: "photo.jpg", prompt: "a photo of", result: result))
        #expect(Set(object.keys) == ["image", "task", "prompt", "text", "token_ids", "prompt_ids", "timings_ms"])
        #expect(object["task"] as? String == "prompted_caption")
        #expect(object["image"] as? String == "photo.jpg")
        #expect(object["prompt"] as? String == "a photo of")
        #expect(object["text"] as? String == "a dog")
        #expect(object["token_ids"] as? [Int] == [5, 6, 202])
        #expect(object["prompt_ids"] as? [Int] == [2, 68, 309])
        let timings = try #require(object["timings_ms"] as? [String: Double])
        #expect(timings == ["vision": 12.5, "total": 40], "stages that did not run are left out")
    }

    @Test func severalSequencesAreListedWithTheirScores() throws {
        let result = Self.result([GeneratedSequence(tokens: [7, 202], score: -0.25, finishedByEOS: true),
                                  GeneratedSequence(tokens: [8], score: -1.5, finishedByEOS: false)], texts: ["best", "second"])
        let object = try Self.object(GenerationRecord(task: .question, image: "-", prompt: "Question: why? Answer:", question: "why?", result: result))
        #expect(object["question"] as? String == "why?")
        #expect(object["text"] as? String == "best", "text and token_ids are the best sequence's")
        #expect(object["token_ids"] as? [Int] == [7, 202])
        let sequences = try #require(object["sequences"] as? [[String: Any]])
        #expect(sequences.map { $0["text"] as? String } == ["best", "second"])
        #expect(sequences.map { $0["token_ids"] as? [Int] } == [[7, 202], [8]])
        #expect(sequences.map { $0["score"] as? Double } == [-0.25, -1.5])
        #expect(Set(sequences[0].keys) == ["text", "token_ids", "score"])
    }

    @Test func chatTurnsAddTheirContextFields() throws {
        let result = Self.result([GeneratedSequence(tokens: [9], score: nil, finishedByEOS: false)], texts: ["red"])
        let turn = ChatSession.Turn(result: result, droppedTurns: 2, reusedIds: 17)
        let object = try Self.object(GenerationRecord(image: "photo.jpg", question: "what color?", turn: turn))
        #expect(object["task"] as? String == "chat")
        #expect(object["question"] as? String == "what color?")
        #expect(object["prompt"] == nil)
        #expect(object["dropped_turns"] as? Int == 2)
        #expect(object["reused_prompt_ids"] as? Int == 17)
        #expect(object["sequences"] == nil)
    }
}
