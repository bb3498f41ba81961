import Blip2Generation
import Blip2Pipeline
import Blip2Server
import Foundation
import Testing

/// A live source's caption, as a camera feed would keep it.
final class FixedLatest: LatestCaptionProvider, @unchecked Sendable {
    private let lock = NSLock()
    private var record: GenerationRecord?
    func set(_ record: GenerationRecord) { lock.withLock { self.record = record } }
    func latestCaption() async -> GenerationRecord? { lock.withLock { record } }
}

@Suite("the latest-caption seam")
struct LatestCaptionTests {
    @Test("GET /v1/latest serves the provider's record, 204 before it has one; cancelling run() stops the server")
    func latest() async throws {
        let pipeline = try Pipeline(modelPath: demoModel)
        var configuration = ServerConfiguration()
        configuration.port = 0
        let provider = FixedLatest()
        let server = ModelServer(pipeline: pipeline, modelPath: demoModel, configuration: configuration, latest: provider)
        let (urls, sink) = AsyncStream<String>.makeStream()
        let running = Task { try await server.run { sink.yield($0) } }
        var iterator = urls.makeAsyncIterator()
        let base = try #require(await iterator.next()).replacingOccurrences(of: "/$", with: "", options: .regularExpression)

        #expect(try await http("GET", base + "/v1/latest").status == 204)
        let result = try pipeline.generate(image: try pipeline.encodeImage(contentsOf: exampleImage), prompt: nil, options: GenerationOptions())
        provider.set(GenerationRecord(task: .caption, image: "camera", prompt: nil, result: result))
        let latest = try await http("GET", base + "/v1/latest")
        #expect(latest.status == 200)
        #expect(latest.json["text"] as? String == result.text)
        #expect(latest.json["image"] as? String == "camera")

        running.cancel()
        _ = try? await running.value
        await #expect(throws: (any Error).self) { try await http("GET", base + "/health") }
    }
}
