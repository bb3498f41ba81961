import Blip2Generation
@testable import Blip2Pipeline
import Foundation
import Testing

/// A prompt about an image whose positions an earlier prompt computed starts from a copy of them, and
/// gets exactly what a prompt about a freshly encoded image gets.
@Suite struct ImagePrefixTests {
    @Test func promptsAfterTheFirstGetWhatAFreshImageGives() throws {
        let (pipeline, demo) = try DemoModelTests().load()
        let url = DemoModelTests.models.appendingPathComponent("examples").appendingPathComponent(demo.examples[2].file)
        let shared = try pipeline.encodeImage(contentsOf: url)
        let prompts: [String?] = [nil, "Question: what color is the star? Answer:", "a picture of", "Question: how many shapes are there? Answer:"]
        for prompt in prompts {
            let fresh = try pipeline.encodeImage(contentsOf: url)
            let ids = pipeline.promptIds(prompt)
            let tokens = [5, 9, 2]
            #expect(try pipeline.stepLogits(image: shared, promptIds: ids, tokens: tokens)
                    == pipeline.stepLogits(image: fresh, promptIds: ids, tokens: tokens), "\(prompt ?? "caption")")
            var options = GenerationOptions()
            options.numBeams = 2
            #expect(try pipeline.generate(image: shared, prompt: prompt, options: options).sequences
                    == pipeline.generate(image: fresh, prompt: prompt, options: options).sequences)
        }
        // A chat about the shared image starts from the kept positions too.
        let chat = ChatSession(pipeline: pipeline, image: shared), freshChat = ChatSession(pipeline: pipeline, image: try pipeline.encodeImage(contentsOf: url))
        for question in ["what color is the star?", "how many shapes are there?"] {
            #expect(try chat.ask(question, options: GenerationOptions()).result.text == freshChat.ask(question, options: GenerationOptions()).result.text)
        }
    }

    @Test func theLeastRecentlyUsedPrefixBeyondTheLimitIsDropped() throws {
        let (pipeline, _) = try DemoModelTests().load()
        let prefixes = ImagePrefixes(capacity: 2)
        let boxes = (0..<3).map { _ in ImagePrefix() }
        for box in boxes { box.keep(pipeline.model.makeSession(capacity: 1)) }
        prefixes.used(boxes[0])
        prefixes.used(boxes[1])
        prefixes.used(boxes[0])   // now boxes[1] is the least recently used
        prefixes.used(boxes[2])
        #expect(boxes[0].kept != nil && boxes[1].kept == nil && boxes[2].kept != nil)
    }
}
