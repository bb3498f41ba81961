import Blip2Generation
import Blip2Image
import Blip2Pipeline
import Foundation
import Hummingbird

// MARK: - Work for the slot threads

enum Work: Sendable {
    case caption(image: Data, prompt: String?)
    case ask(image: Data, question: String)
    case chat(question: String, turn: ChatTurn)
    /// OpenAI messages: earlier turns and the last question (nil: a caption).
    case completion(image: Data, history: [(question: String, answer: String)], question: String?)

    enum ChatTurn: Sendable {
        /// A new conversation about this image.
        case first(image: Data)
        /// The next turn of a kept conversation.
        case next(session: String)
    }
}

struct Outcome: Sendable {
    var record: GenerationRecord
    var result: Pipeline.Result
    var sessionId: String?
    var imageCached: Bool?
    /// Image embeddings plus prompt ids, as OpenAI's usage counts a prompt.
    var promptTokens: Int

    var finishReason: String { result.sequences.first?.finishedByEOS == true ? "stop" : "length" }
    var usage: Usage { Usage(promptTokens: promptTokens, completionTokens: result.sequences.first?.tokens.count ?? 0) }
}

/// The --json record plus what only the server knows.
struct GenerationResponse: Encodable {
    let outcome: Outcome
    let model: String
    enum Keys: String, CodingKey { case sessionId = "session_id", imageCached = "image_cached", model }
    func encode(to encoder: any Encoder) throws {
        try outcome.record.encode(to: encoder)
        var c = encoder.container(keyedBy: Keys.self)
        try c.encodeIfPresent(outcome.sessionId, forKey: .sessionId)
        try c.encodeIfPresent(outcome.imageCached, forKey: .imageCached)
        try c.encode(model, forKey: .model)
    }
}

enum StreamEvent: Sendable {
    /// The image is read and the prompt fits: from here on the answer is a 200 stream.
    case started
    case text(String)
    case finished(Outcome)
    case failed(any Error)
}

/// A job: `onStart` once the request is known to be good, `onText` for streamed pieces.
typealias Job = @Sendable (_ onStart: () -> Void, _ onText: ((String) -> Void)?, _ ticket: JobTicket) throws -> Outcome

/// Hands an iterator to the response body's writer; only one task uses it at a time.
// @unchecked Sendable: only the one task writing the response body uses it.
final class IteratorBox<Iterator: AsyncIteratorProtocol>: @unchecked Sendable {
    var iterator: Iterator
    init(_ iterator: Iterator) { self.iterator = iterator }
    func next() async throws -> Iterator.Element? { try await iterator.next() }
}

extension ModelServer {
    /// Runs on a slot thread. An unreadable image or a prompt beyond the context is reported in the
    /// request's own field names.
    func perform(_ work: Work, options: GenerationOptions, names: FieldNames, ticket: JobTicket,
                 onStart: () -> Void, onText: ((String) -> Void)?) throws -> Outcome {
        do {
            return try perform(work, options: options, imageName: names.image, ticket: ticket, onStart: onStart, onText: onText)
        } catch let error as ImageError {
            throw APIError(image: error, field: names.image)
        } catch let error as PipelineError {
            guard let overflow = error.overflow else { throw error }
            throw APIError(overflow: overflow, names: names)
        }
    }

    private func perform(_ work: Work, options: GenerationOptions, imageName: String, ticket: JobTicket,
                         onStart: () -> Void, onText: ((String) -> Void)?) throws -> Outcome {
        let stop = { ticket.isCancelled }
        switch work {
        case .caption(let image, let prompt):
            let (encoded, cached) = try encode(image, name: imageName)
            return try single(encoded, cached: cached, task: prompt == nil ? .caption : .promptedCaption, prompt: prompt,
                              question: nil, options: options, onStart: onStart, onText: onText, stop: stop)
        case .ask(let image, let question):
            let (encoded, cached) = try encode(image, name: imageName)
            return try single(encoded, cached: cached, task: .question, prompt: Prompts.question(question), question: question,
                              options: options, onStart: onStart, onText: onText, stop: stop)
        case .completion(let image, let history, let question):
            let (encoded, cached) = try encode(image, name: imageName)
            guard let question else {
                return try single(encoded, cached: cached, task: .caption, prompt: nil, question: nil, options: options,
                                  onStart: onStart, onText: onText, stop: stop)
            }
            let (_, dropped) = try pipeline.chatPrompt(history: history, question: question, maxNewTokens: options.maxNewTokens)
            let prompt = Prompts.chat(history: Array(history.dropFirst(dropped)), question: question)
            var outcome = try single(encoded, cached: cached, task: history.isEmpty ? .question : .chat, prompt: prompt,
                                     question: question, options: options, onStart: onStart, onText: onText, stop: stop)
            outcome.record.droppedTurns = dropped
            return outcome
        case .chat(let question, let start):
            let session: ChatSession
            var cached: Bool?
            let id: String
            switch start {
            case .next(let sessionId):
                guard let found = sessions.get(sessionId) else {
                    throw APIError(status: .notFound,
                                   message: "session_id: no conversation \(sessionId) (it ended after \(Int(configuration.sessionTTL)) s idle or made room for newer ones); send the image again to start a new one",
                                   type: "invalid_request_error", param: "session_id", code: "session_not_found")
                }
                session = found
                id = sessionId
            case .first(let image):
                let (encoded, hit) = try encode(image, name: imageName)
                session = ChatSession(pipeline: pipeline, image: encoded)
                cached = hit
                id = Self.newSessionId()
            }
            _ = try pipeline.chatPrompt(history: session.history, question: question, maxNewTokens: options.maxNewTokens)
            onStart()
            let turn = try session.ask(question, options: options, onText: onText, shouldStop: stop)
            if case .first = start { sessions.put(id, session) }
            metrics.setSessions(sessions.count)
            var record = GenerationRecord(task: .chat, image: nil, prompt: nil, question: question, result: turn.result)
            record.droppedTurns = turn.droppedTurns
            record.reusedPromptIds = turn.reusedIds
            if cached == nil { record.timingsMs.total = turn.result.timings.total }
            return Outcome(record: record, result: turn.result, sessionId: id, imageCached: cached,
                           promptTokens: pipeline.numQueryTokens + turn.result.promptIds.count)
        }
    }

    private func single(_ image: EncodedImage, cached: Bool, task: Blip2Task, prompt: String?, question: String?,
                        options: GenerationOptions, onStart: () -> Void, onText: ((String) -> Void)?,
                        stop: @escaping () -> Bool) throws -> Outcome {
        try pipeline.checkFits(promptIds: pipeline.promptIds(prompt), maxNewTokens: options.maxNewTokens)
        onStart()
        let result = try pipeline.generate(image: image, prompt: prompt, options: options, onText: onText, shouldStop: stop)
        return Outcome(record: GenerationRecord(task: task, image: nil, prompt: prompt, question: question, result: result),
                       result: result, sessionId: nil, imageCached: cached,
                       promptTokens: pipeline.numQueryTokens + result.promptIds.count)
    }

    /// The image's embeddings, from the cache when the same bytes were encoded before (the cached copy
    /// reports no decode or encode time: none was spent).
    func encode(_ data: Data, name: String) throws -> (EncodedImage, cached: Bool) {
        let key = SHA256.hex(data)
        if var hit = images.get(key) {
            metrics.imageCache(hit: true)
            hit.timings = StageTimings()
            return (hit, true)
        }
        var timings = StageTimings()
        let pixels = try pipeline.pixels(data: data, name: name, timings: &timings)
        let encoded = pipeline.encode(pixels: pixels, timings: timings)
        images.put(key, encoded)
        metrics.imageCache(hit: false)
        return (encoded, false)
    }

    static func newSessionId() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
    }

    /// Runs a job with its queue wait and stage timings recorded.
    func timed(_ job: Job, ticket: JobTicket, enqueued: ContinuousClock.Instant, onStart: @escaping () -> Void,
               onText: ((String) -> Void)?) throws -> Outcome {
        let waited = ContinuousClock.now - enqueued
        metrics.recordQueueWait(seconds: Double(waited.components.seconds) + Double(waited.components.attoseconds) / 1e18)
        let outcome: Outcome
        do { outcome = try job(onStart, onText, ticket) } catch {
            if case GenerationError.cancelled = error { metrics.generationCancelled() }
            throw error
        }
        metrics.record(timings: outcome.result.timings, generatedTokens: outcome.result.sequences.first?.tokens.count ?? 0)
        return outcome
    }

    /// A server-sent-event response. Its status waits for the job's start, so that a bad image or a prompt
    /// too long is a 400 rather than an error inside a 200 stream; a client that stops reading cancels it.
    func stream(ticket: JobTicket, job: @escaping Job, opening: [String] = [],
                frames: @escaping @Sendable (StreamEvent) -> [String]) async throws -> Response {
        let (events, sink) = AsyncStream<StreamEvent>.makeStream()
        let enqueued = ContinuousClock.now
        try worker.submit(ticket, run: {
            do {
                let outcome = try self.timed(job, ticket: ticket, enqueued: enqueued, onStart: { sink.yield(.started) },
                                             onText: { sink.yield(.text($0)) })
                sink.yield(.finished(outcome))
            } catch {
                sink.yield(.failed(error))
            }
            sink.finish()
        }, refuse: { error in
            sink.yield(.failed(error))
            sink.finish()
        })
        let box = IteratorBox(events.makeAsyncIterator())
        let first: StreamEvent?
        do { first = try await withTaskCancellationHandler { try await box.next() } onCancel: { [worker] in worker.cancel(ticket) } }
        switch first {
        case .failed(let error)?: throw error
        case nil: throw CancellationError()
        default: break
        }
        let worker = self.worker
        ticket.isStreaming = true
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: ResponseBody { writer in
            do {
                for frame in opening { try await writer.write(ByteBuffer(string: frame)) }
                while let event = try await box.next() {
                    for frame in frames(event) { try await writer.write(ByteBuffer(string: frame)) }
                }
                try await writer.finish(nil)
            } catch {
                worker.cancel(ticket)
                throw error
            }
        })
    }
}
