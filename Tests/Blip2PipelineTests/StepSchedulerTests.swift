import Blip2Generation
import Blip2Pipeline
import Foundation
import Testing

/// Records the sequences of each shared step.
final class StepLog: @unchecked Sendable {
    private let lock = NSLock()
    private var sizes: [Int] = [], rows: [Int] = []
    func record(_ sequences: Int, _ tokens: Int) { lock.withLock { sizes.append(sequences); rows.append(tokens) } }
    var steps: [Int] { lock.withLock { sizes } }
    var tokens: [Int] { lock.withLock { rows } }
}

/// Runs `bodies` on threads of their own at once; fails the test (rather than hanging) after `timeout`.
func runConcurrently(_ bodies: [@Sendable () throws -> Void], timeout: Double = 300) {
    let group = DispatchGroup()
    let failures = StepLogErrors()
    for body in bodies {
        group.enter()
        let thread = Thread {
            do { try body() } catch { failures.add(error) }
            group.leave()
        }
        thread.stackSize = 16 << 20
        thread.start()
    }
    #expect(group.wait(timeout: .now() + timeout) == .success, "concurrent generations did not finish in \(timeout) s")
    #expect(failures.all.isEmpty, "\(failures.all)")
}

final class StepLogErrors: @unchecked Sendable {
    private let lock = NSLock()
    private var errors: [String] = []
    func add(_ error: any Error) { lock.withLock { errors.append("\(error)") } }
    var all: [String] { lock.withLock { errors } }
}

/// Generations on several threads share one model: their decode steps run together, and each gives the
/// tokens it gives alone.
@Suite(.serialized) struct StepSchedulerTests {
    struct Case: Sendable {
        var example: Int
        var prompt: String?
        var beams = 1
    }

    static let cases = [Case(example: 0, prompt: nil), Case(example: 1, prompt: "Question: what color is the star? Answer:"),
                        Case(example: 2, prompt: nil, beams: 3), Case(example: 3, prompt: "Question: how many shapes are there? Answer:"),
                        Case(example: 4, prompt: "a picture of"), Case(example: 5, prompt: nil)]

    func options(_ c: Case) -> GenerationOptions {
        var options = GenerationOptions()
        options.maxNewTokens = 16
        options.numBeams = c.beams
        return options
    }

    @Test func concurrentGenerationsEqualTheirRunsAlone() throws {
        let (pipeline, demo) = try DemoModelTests().load()
        let images = try demo.examples.map { try DemoModelTests.encode($0, with: pipeline) }
        let alone = try Self.cases.map { c in
            try pipeline.generate(image: images[c.example % images.count], prompt: c.prompt, options: options(c)).sequences
        }
        let log = StepLog()
        pipeline.scheduler.onStep = { log.record($0, $1) }
        defer { pipeline.scheduler.onStep = nil }
        let results = ResultSlots(count: Self.cases.count)
        runConcurrently(Self.cases.enumerated().map { index, c in
            { [options = options(c)] in
                let result = try pipeline.generate(image: images[c.example % images.count], prompt: c.prompt, options: options)
                results.set(index, result.sequences)
            }
        })
        for (index, c) in Self.cases.enumerated() {
            #expect(results.get(index) == alone[index], "case \(index) (\(c.prompt ?? "caption"), beams \(c.beams))")
        }
        let steps = log.steps
        #expect(steps.contains { $0 > 1 }, "steps shared by several sequences: \(steps)")
        #expect(steps.allSatisfy { $0 >= 1 && $0 <= Self.cases.map(\.beams).reduce(0, +) })
        #expect(pipeline.scheduler.decoding == 0, "every generation left")
    }

    /// A question asked while another generation decodes has its prompt fed in that generation's next step
    /// (one pass over the weights for both), and both give the tokens they give alone.
    @Test func aPromptRidesOnTheStepOfADecodingGeneration() throws {
        let (pipeline, demo) = try DemoModelTests().load()
        let image = try DemoModelTests.encode(demo.examples[0], with: pipeline)
        var settings = GenerationOptions()
        settings.maxNewTokens = 12
        settings.minNewTokens = 12
        let options = settings, question = "Question: what color is the circle? Answer:"
        let captionAlone = try pipeline.generate(image: image, prompt: nil, options: options).sequences
        let answerAlone = try pipeline.generate(image: image, prompt: question, options: options).sequences
        let log = StepLog()
        pipeline.scheduler.onStep = { log.record($0, $1) }
        defer { pipeline.scheduler.onStep = nil }
        let results = ResultSlots(count: 2)
        let captionDecoding = DispatchSemaphore(value: 0)
        runConcurrently([
            {
                var told = false
                results.set(0, try pipeline.generate(image: image, prompt: nil, options: options, shouldStop: {
                    // After its first step, the caption lets the question start and waits (bounded) for it to
                    // join, so the question's prompt is in the caption's next step.
                    if !told {
                        told = true
                        captionDecoding.signal()
                        for _ in 0..<10_000 where pipeline.scheduler.decoding < 2 { usleep(1_000) }
                    }
                    return false
                }).sequences)
            },
            {
                captionDecoding.wait()
                results.set(1, try pipeline.generate(image: image, prompt: question, options: options).sequences)
            },
        ])
        #expect(results.get(0) == captionAlone && results.get(1) == answerAlone)
        let promptTokens = pipeline.promptIds(question).count
        #expect(zip(log.steps, log.tokens).contains { $0 == 2 && $1 == 1 + promptTokens },
                "a step with the caption's token and the question's \(promptTokens) prompt tokens: \(Array(zip(log.steps, log.tokens)))")
        #expect(pipeline.scheduler.decoding == 0)
    }

    @Test func aCancelledGenerationLeavesTheOthersRunning() throws {
        let (pipeline, demo) = try DemoModelTests().load()
        let image = try DemoModelTests.encode(demo.examples[0], with: pipeline)
        var settings = GenerationOptions()
        settings.maxNewTokens = 30
        settings.minNewTokens = 30
        let options = settings
        let alone = try pipeline.generate(image: image, prompt: nil, options: options).sequences
        let results = ResultSlots(count: 1)
        let cancelled = StepLogErrors()
        runConcurrently([
            { results.set(0, try pipeline.generate(image: image, prompt: nil, options: options).sequences) },
            {
                var steps = 0
                do {
                    _ = try pipeline.generate(image: image, prompt: nil, options: options, shouldStop: {
                        steps += 1
                        return steps > 5
                    })
                } catch let error as GenerationError {
                    cancelled.add(error)
                }
            },
        ])
        #expect(results.get(0) == alone)
        #expect(cancelled.all.count == 1, "the second generation stopped when asked")
        #expect(pipeline.scheduler.decoding == 0)
    }

    @Test func turnsOfOneConversationFromTwoThreadsRunOneAfterTheOther() throws {
        let (pipeline, demo) = try DemoModelTests().load()
        let chat = ChatSession(pipeline: pipeline, image: try DemoModelTests.encode(demo.examples[0], with: pipeline))
        let questions = ["what color is the circle?", "how many shapes are there?"]
        runConcurrently(questions.map { question in { _ = try chat.ask(question, options: GenerationOptions()) } })
        let history = chat.history
        #expect(history.count == 2 && Set(history.map(\.question)) == Set(questions))
        // Replayed one by one in the order they ran, the answers are the same.
        let replay = ChatSession(pipeline: pipeline, image: chat.image)
        for turn in history {
            #expect(try replay.ask(turn.question, options: GenerationOptions()).result.text == turn.answer)
        }
    }
}

final class ResultSlots: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [[GeneratedSequence]?]
    init(count: Int) { values = Array(repeating: nil, count: count) }
    func set(_ index: Int, _ value: [GeneratedSequence]) { lock.withLock { values[index] = value } }
    func get(_ index: Int) -> [GeneratedSequence]? { lock.withLock { values[index] } }
}
