import Blip2Generation
import Blip2Models
import Blip2ModelFile
import Blip2Pipeline
import Blip2Watch
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import ServiceLifecycle

// MARK: - The server: routes over one pipeline
//
// Everything that touches the model (decoding and encoding images, sessions' KV caches, generation) runs as
// a job on the model worker's thread; the HTTP side only parses, queues, streams and formats.

public final class ModelServer: Sendable {
    let pipeline: Pipeline
    let configuration: ServerConfiguration
    /// The model file's name without its extension, as /v1/models lists it.
    public let modelName: String
    /// The weight type the file was converted with (q8, q4, f16, mixed...).
    public let precision: String
    let worker: ModelWorker
    let sessions: BoundedCache<ChatSession>
    let images: BoundedCache<EncodedImage>
    let metrics = ServerMetrics()
    let latest: (any LatestCaptionProvider)?
    /// `--camera`: captioned through `worker` as its background job.
    let camera: CameraFeed?
    /// `/v1/models`' `created`: the model file's modification time, the same in every answer and across
    /// restarts (OpenAI's is when the model was made).
    let created: Int

    public convenience init(pipeline: Pipeline, modelPath: String, configuration: ServerConfiguration,
                            latest: (any LatestCaptionProvider)? = nil) {
        self.init(pipeline: pipeline, modelPath: modelPath, configuration: configuration, latest: latest,
                  worker: ModelWorker(capacity: configuration.queue, slots: configuration.parallel), camera: nil)
    }

    /// With a camera: its options are checked against the model here (a question that cannot fit the
    /// context throws); nothing is read from its source before `run`.
    public convenience init(pipeline: Pipeline, modelPath: String, configuration: ServerConfiguration,
                            latest: (any LatestCaptionProvider)? = nil, camera: CameraConfiguration?) throws {
        let worker = ModelWorker(capacity: configuration.queue, slots: configuration.parallel)
        let feed = try camera.map { camera in
            (configuration: camera, watcher: try FrameWatcher(pipeline: pipeline, source: camera.source, options: camera.options,
                                                              model: SharedModelAccess(worker: worker)))
        }
        self.init(pipeline: pipeline, modelPath: modelPath, configuration: configuration, latest: latest,
                  worker: worker, camera: feed)
    }

    private init(pipeline: Pipeline, modelPath: String, configuration: ServerConfiguration,
                 latest: (any LatestCaptionProvider)?, worker: ModelWorker,
                 camera: (configuration: CameraConfiguration, watcher: FrameWatcher)?) {
        self.pipeline = pipeline
        self.configuration = configuration
        self.latest = latest
        modelName = URL(fileURLWithPath: modelPath).deletingPathExtension().lastPathComponent
        let modified = (try? FileManager.default.attributesOfItem(atPath: modelPath))?[.modificationDate] as? Date
        created = Int((modified ?? Date()).timeIntervalSince1970)
        let file = try? ModelFile(path: modelPath, options: .init(decompressAtOpen: false))
        precision = (try? file?.decode(QuantizationProvenance.self, section: MetadataSectionName.quantization))?.weights ?? "unknown"
        self.worker = worker
        let sessionBytes = LanguageSession.cacheBytes(pipeline.model, capacity: pipeline.contextLimit)
        sessions = BoundedCache(capacity: max(1, min(configuration.maxSessions, configuration.sessionMemoryBytes / max(1, sessionBytes))),
                                timeToLive: configuration.sessionTTL)
        images = BoundedCache(capacity: configuration.imageCacheEntries)
        let metrics = self.metrics
        worker.onDepthChange = { metrics.setQueueDepth($0) }
        worker.onRunningChange = { metrics.setActiveSlots($0) }
        pipeline.scheduler.onStep = { sequences, _ in metrics.recordStep(sequences: sequences) }
        if let camera {
            self.camera = CameraFeed(watcher: camera.watcher, log: camera.configuration.log, model: modelName,
                                     registry: metrics.registry, maxListeners: configuration.maxCameraListeners)
        } else {
            self.camera = nil
        }
    }

    /// Serves until SIGINT or SIGTERM: then stops accepting, refuses what waits in the queue, lets the
    /// running generation and open responses finish, and returns. `onListening` gets the URL once bound.
    public func run(onListening: @escaping @Sendable (String) -> Void) async throws {
        worker.start()
        camera?.start()
        defer {
            camera?.stop()
            worker.stop()
            // The watch thread ends once its job ran or was refused; the source notices within 0.2 s.
            camera?.join(timeout: 5)
        }
        var logger = Logger(label: "blip2-serve")
        logger.logLevel = .warning
        let host = configuration.host
        let continues = ExpectContinueHandler.admits(worker: worker, maxBodyBytes: configuration.maxBodyBytes)
        let app = Application(
            router: makeRouter(),
            server: .http1(configuration: .init(additionalChannelHandlers: [ExpectContinueHandler(admits: continues)],
                                                idleTimeout: .milliseconds(Int64((configuration.idleTimeout * 1000).rounded())))),
            configuration: .init(address: .hostname(host, port: configuration.port), serverName: "blip2"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                onListening("http://\(host.contains(":") ? "[\(host)]" : host):\(port)/")
            },
            logger: logger
        )
        // Shut down in reverse order: first the camera stops and ends its event streams, then the queue is
        // drained, then the HTTP server finishes what is open.
        var services: [any Service] = [app, QueueDrain(worker: worker)]
        if let camera { services.append(CameraService(camera: camera)) }
        let group = ServiceGroup(configuration: .init(services: services,
                                                      gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    // MARK: Routes

    typealias Handler = @Sendable (Request) async throws -> Response

    /// Every route, in one list: the router is built from it, and so are the metrics' route labels and the
    /// `Allow` header of a 405.
    func routeTable() -> [(method: HTTPRequest.Method, path: String, handler: Handler)] {
        var table: [(method: HTTPRequest.Method, path: String, handler: Handler)] = [
            (.get, "/", { _ in Page.response() }),
            (.get, "/index.html", { _ in Page.response() }),
            (.get, "/health", { _ in try self.health() }),
            (.get, "/metrics", { _ in
                self.camera?.updateMetrics()
                return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                                body: .init(byteBuffer: ByteBuffer(string: self.metrics.text())))
            }),
            (.get, "/v1/models", { _ in try self.models() }),
            (.post, "/v1/caption", { request in try await self.generation(request, route: .caption) }),
            (.post, "/v1/ask", { request in try await self.generation(request, route: .ask) }),
            (.post, "/v1/chat", { request in try await self.generation(request, route: .chat) }),
            (.post, "/v1/chat/completions", { request in try await self.completion(request) }),
            (.get, "/v1/camera/latest", { _ in try self.withCamera().latest() }),
            (.get, "/v1/camera/latest.jpg", { _ in try self.withCamera().image(captioned: true) }),
            (.get, "/v1/camera/frame.jpg", { _ in try self.withCamera().image(captioned: false) }),
            (.get, "/v1/camera/events", { _ in try self.withCamera().events() }),
        ]
        if let latest {
            table.append((.get, "/v1/latest", { _ in
                guard let record = await latest.latestCaption() else { return Response(status: .noContent) }
                return try json(record)
            }))
        } else if camera != nil {
            table.append((.get, "/v1/latest", { _ in try self.withCamera().latest() }))
        }
        return table
    }

    func makeRouter() -> Router<BasicRequestContext> {
        let table = routeTable()
        let router = Router(context: BasicRequestContext.self)
        var methods: [String: [HTTPRequest.Method]] = [:]
        for route in table { methods[route.path, default: []].append(route.method) }
        router.middlewares.add(APIMiddleware(server: self, methods: methods))
        for route in table {
            let handler = route.handler
            router.on(RouterPath(route.path), method: route.method) { request, _ in try await handler(request) }
        }
        return router
    }

    /// The camera, or the 404 that says how to get one.
    func withCamera() throws -> CameraFeed {
        guard let camera else {
            throw APIError(status: .notFound, message: "this server has no camera; start it with blip2 serve MODEL --camera SOURCE",
                           type: "invalid_request_error", code: "no_camera")
        }
        return camera
    }

    func health() throws -> Response {
        struct Health: Encodable {
            let status = "ok"
            let model: String
            let precision: String
            let contextTokens: Int
            let queueDepth: Int
            let queueCapacity: Int
            let activeSlots: Int
            let slots: Int
            let sessions: Int
            let sessionCapacity: Int
            let camera: CameraFeed.Status?
            enum CodingKeys: String, CodingKey {
                case status, model, precision, contextTokens = "context_tokens", queueDepth = "queue_depth"
                case queueCapacity = "queue_capacity", activeSlots = "active_slots", slots, sessions, sessionCapacity = "session_capacity", camera
            }
        }
        return try json(Health(model: modelName, precision: precision, contextTokens: pipeline.contextLimit,
                               queueDepth: worker.depth, queueCapacity: configuration.queue, activeSlots: worker.active,
                               slots: worker.slots, sessions: sessions.count,
                               sessionCapacity: sessions.capacity, camera: camera?.status()))
    }

    func models() throws -> Response {
        struct Model: Encodable {
            let id: String
            let object = "model"
            let created: Int
            let ownedBy = "blip2-edge"
            let precision: String
            enum CodingKeys: String, CodingKey { case id, object, created, ownedBy = "owned_by", precision }
        }
        struct List: Encodable {
            let object = "list"
            let data: [Model]
        }
        return try json(List(data: [Model(id: modelName, created: created, precision: precision)]))
    }

    // MARK: /v1/caption, /v1/ask, /v1/chat

    enum Route: String {
        case caption, ask, chat
    }

    /// The fields each native route takes; anything else is refused by name.
    static func fields(of route: Route) -> [String] {
        let own: [String]
        switch route {
        case .caption: own = ["image", "prompt"]
        case .ask: own = ["image", "question"]
        case .chat: own = ["image", "question", "session_id"]
        }
        return own + ["stream"] + GenerationSetting.all.map(\.field)
    }

    func generation(_ request: Request, route: Route) async throws -> Response {
        let contentType = request.headers[.contentType]
        return try await serve(request) { body in
            let fields = try RequestFields(body: body, contentType: contentType)
            try fields.refuseUnknownFields(allowed: Self.fields(of: route), route: "/v1/\(route.rawValue)")
            func required(_ name: String) throws -> String {
                guard let value = try fields.string(name), !value.isEmpty else { throw APIError.badRequest("\(name): required", param: name) }
                return value
            }
            func image() throws -> Data {
                guard let image = fields.image else {
                    throw APIError.badRequest("image: required (a multipart file part named image, or base64 / a data: URL in JSON)", param: "image")
                }
                return image
            }
            let work: Work
            let task: Blip2Task
            switch route {
            case .caption:
                let prompt = try fields.string("prompt")
                work = .caption(image: try image(), prompt: prompt)
                task = prompt == nil ? .caption : .promptedCaption
            case .ask:
                let question = try required("question")
                work = .ask(image: try image(), question: question)
                task = .question
            case .chat:
                let question = try required("question")
                if let session = try fields.string("session_id") {
                    if fields.image != nil {
                        throw APIError.badRequest("session_id: give either image (a new conversation) or session_id (the next turn), not both",
                                                  param: "session_id")
                    }
                    work = .chat(question: question, turn: .next(session: session))
                } else {
                    work = .chat(question: question, turn: .first(image: try image()))
                }
                task = .chat
            }
            let names = FieldNames.native(prompt: route == .caption ? "prompt" : "question")
            let model = self.modelName
            return Prepared(work: work, options: try fields.generationOptions(for: task, names: names), names: names,
                            stream: try fields.bool("stream") ?? false,
                            frames: { event in self.nativeFrames(event) },
                            answer: { outcome in try json(GenerationResponse(outcome: outcome, model: model)) })
        }
    }

    /// What a generation route made of its request: the work, its options, the names its errors use, and
    /// how its answer is written, whole or as a stream.
    struct Prepared: Sendable {
        var work: Work
        var options: GenerationOptions
        var names: FieldNames
        var stream: Bool
        /// Stream events sent before the first token (OpenAI's role chunk).
        var opening: [String] = []
        var frames: @Sendable (StreamEvent) -> [String]
        var answer: @Sendable (Outcome) throws -> Response
    }

    /// What every generation route does with a request: read its body, prepare the work, queue it and
    /// answer whole or streamed. A client that goes away while its request waits or runs cancels it
    /// (between tokens).
    func serve(_ request: Request, prepare: @escaping @Sendable (Data) throws -> Prepared) async throws -> Response {
        let ticket = JobTicket()
        // A full queue refuses before the body is read: a 20 MB upload is not buffered to be refused.
        try worker.checkRoom()
        return try await request.body.consumeWithInboundCloseHandler({ body in
            let prepared = try prepare(try await self.collect(body, headers: request.headers))
            let job: Job = { onStart, onText, ticket in
                try self.perform(prepared.work, options: prepared.options, names: prepared.names, ticket: ticket,
                                 onStart: onStart, onText: onText)
            }
            if prepared.stream {
                return try await self.stream(ticket: ticket, job: job, opening: prepared.opening, frames: prepared.frames)
            }
            let enqueued = ContinuousClock.now
            let outcome = try await self.worker.run(ticket) { try self.timed(job, ticket: ticket, enqueued: enqueued, onStart: {}, onText: nil) }
            return try prepared.answer(outcome)
        }, onInboundClosed: { [worker] in if !ticket.isStreaming { worker.cancel(ticket) } })
    }

    /// The body, refused with 413 past --max-body-mb. A body somewhat over the limit is read to its end
    /// first, so that the client, still sending, gets the answer rather than a reset connection.
    func collect(_ body: RequestBody, headers: HTTPFields) async throws -> Data {
        let limit = configuration.maxBodyBytes
        let tooLarge = APIError(status: .contentTooLarge, message: "the request body is over the \(limit >> 20) MB limit (--max-body-mb)",
                                type: "invalid_request_error", code: "body_too_large")
        if let length = headers[.contentLength].flatMap(Int.init), length > 4 * limit { throw tooLarge }
        var data = Data()
        var total = 0
        for try await chunk in body {
            total += chunk.readableBytes
            if total <= limit {
                data.append(contentsOf: chunk.readableBytesView)
            } else if total > 4 * limit {
                break
            }
        }
        if total > limit { throw tooLarge }
        return data
    }

    // MARK: /v1/chat/completions

    func completion(_ request: Request) async throws -> Response {
        try await serve(request) { body in
            let parsed = try ChatCompletionRequest(body: body)
            if let model = parsed.model, !model.isEmpty, model != self.modelName {
                throw APIError(status: .notFound, message: "model: \(model) is not served here; GET /v1/models lists \(self.modelName)",
                               type: "invalid_request_error", param: "model", code: "model_not_found")
            }
            let task: Blip2Task = parsed.question == nil ? .caption : parsed.history.isEmpty ? .question : .chat
            var options = GenerationOptions()
            options.maxNewTokens = parsed.maxTokens ?? task.defaultMaxNewTokens
            // Temperature 0 or absent: greedy, the deterministic answer OpenAI clients ask for with 0.
            if let temperature = parsed.temperature, temperature > 0 {
                options.doSample = true
                options.temperature = temperature
                options.topP = parsed.topP ?? 1
                options.seed = parsed.seed ?? 0
                options.numReturnSequences = parsed.n
            }
            let names = FieldNames.openAI(maxTokens: parsed.maxTokensField)
            try RequestFields.validate(options, names: names)
            let id = "chatcmpl-" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
            let created = Int(Date().timeIntervalSince1970)
            let model = self.modelName
            return Prepared(
                work: .completion(image: parsed.image, history: parsed.history, question: parsed.question), options: options, names: names,
                stream: parsed.stream,
                opening: [self.chunk(id: id, created: created, delta: .init(role: "assistant", content: ""), finish: nil)],
                frames: { event in self.completionFrames(event, id: id, created: created, includeUsage: parsed.includeUsage) },
                answer: { outcome in
                    let sequences = outcome.result.sequences
                    let choices = zip(outcome.result.texts, sequences).enumerated().map { index, choice in
                        ChatCompletion.Choice(index: index, message: .init(content: choice.0),
                                              finishReason: choice.1.finishedByEOS ? "stop" : "length")
                    }
                    let usage = Usage(promptTokens: outcome.usage.promptTokens,
                                      completionTokens: sequences.reduce(0) { $0 + $1.tokens.count })
                    return try json(ChatCompletion(id: id, created: created, model: model, choices: choices, usage: usage))
                })
        }
    }

    private func chunk(id: String, created: Int, delta: ChatCompletionChunk.Choice.Delta, finish: String?) -> String {
        sse(ChatCompletionChunk(id: id, created: created, model: modelName, choices: [.init(delta: delta, finishReason: finish)]))
    }

    func completionFrames(_ event: StreamEvent, id: String, created: Int, includeUsage: Bool) -> [String] {
        switch event {
        case .started: return []
        case .text(let piece): return [chunk(id: id, created: created, delta: .init(content: piece), finish: nil)]
        case .finished(let outcome):
            var frames = [chunk(id: id, created: created, delta: .init(), finish: outcome.finishReason)]
            if includeUsage {
                frames.append(sse(ChatCompletionChunk(id: id, created: created, model: modelName, choices: [], usage: outcome.usage)))
            }
            return frames + ["data: [DONE]\n\n"]
        case .failed(let error): return [sse(APIError(error).body)]
        }
    }

    func nativeFrames(_ event: StreamEvent) -> [String] {
        struct Piece: Encodable { let text: String }
        switch event {
        case .started: return []
        case .text(let piece): return [sse(Piece(text: piece))]
        case .finished(let outcome): return [sse(GenerationResponse(outcome: outcome, model: modelName), event: "result")]
        case .failed(let error): return [sse(APIError(error).body, event: "error")]
        }
    }
}

/// Drains the model queue when the service group begins its graceful shutdown.
struct QueueDrain: Service {
    let worker: ModelWorker
    func run() async throws {
        try? await gracefulShutdown()
        worker.drain()
    }
}

/// Counts every answer by route and status, turns every error into the API's JSON error, and answers a
/// request for a path under /v1 without the key with 401 rather than 404, whether or not a route is there.
struct APIMiddleware<Context: RequestContext>: RouterMiddleware {
    let server: ModelServer
    /// The methods of every route by path (from the route table).
    let methods: [String: [HTTPRequest.Method]]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        let path = Self.routerPath(request.uri.path)
        let route = methods[path] != nil ? path : "other"
        var response: Response
        if let key = server.configuration.apiKey, path.hasPrefix("/v1/") || path == "/metrics", !Self.authorized(request, key: key) {
            response = server.errorResponse(.keyRequired)
        } else {
            do {
                response = try await next(request, context)
            } catch {
                response = server.errorResponse(server.apiError(error, request: request, allowed: methods[path] ?? []))
            }
        }
        // Generation routes watch their connection for the client leaving, and the framework closes a
        // connection watched that way once the answer is sent: say so, so that clients do not reuse it.
        if request.method == .post { response.headers[.connection] = "close" }
        server.metrics.request(route: route, status: response.status.code)
        if let log = server.configuration.requestLog {
            // Until the answer's head: a streamed body (tokens, camera events) goes on after it.
            let elapsed = started.duration(to: .now)
            let milliseconds = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            let time = formatter.string(from: Date())
            log("\(time) \(request.method) \(request.uri.path) \(response.status.code) \(String(format: "%.1f", milliseconds)) ms")
        }
        return response
    }

    /// The path as the router matches it: empty segments do not count, so `//v1//models/` is `/v1/models`.
    static func routerPath(_ path: String) -> String {
        "/" + path.split(separator: "/", omittingEmptySubsequences: true).joined(separator: "/")
    }

    static func authorized(_ request: Request, key: String) -> Bool {
        var given = request.headers[.authorization].map { value -> String in
            value.lowercased().hasPrefix("bearer ") ? String(value.dropFirst(7)).trimmingCharacters(in: .whitespaces) : value
        }
        if given == nil, let name = HTTPField.Name("X-API-Key") { given = request.headers[name] }
        guard let given else { return false }
        // Compare every byte whatever the first difference, so timing tells nothing about the key.
        let a = Array(given.utf8), b = Array(key.utf8)
        var difference = a.count ^ b.count
        for i in 0..<max(a.count, b.count) {
            difference |= Int((i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0))
        }
        return difference == 0
    }
}

extension ModelServer {
    /// `allowed`: the methods the path takes, for a 405's `Allow`.
    func apiError(_ error: any Error, request: Request, allowed: [HTTPRequest.Method]) -> APIError {
        if let error = error as? any HTTPResponseError {
            switch error.status {
            // The router answers 404 for a known path asked with another method.
            case .notFound where !allowed.isEmpty, .methodNotAllowed:
                let names = allowed.map(\.rawValue)
                var refusal = APIError(status: .methodNotAllowed,
                                       message: "\(request.method) is not allowed on \(request.uri.path); it takes \(names.joined(separator: ", "))",
                                       type: "invalid_request_error", code: "method_not_allowed")
                refusal.allow = names.joined(separator: ", ")
                return refusal
            case .notFound:
                return APIError(status: .notFound, message: "no such route: \(request.method) \(request.uri.path)", type: "invalid_request_error", code: "not_found")
            case .contentTooLarge:
                return APIError(status: .contentTooLarge, message: "the request body is over the \(configuration.maxBodyBytes >> 20) MB limit (--max-body-mb)",
                                type: "invalid_request_error", code: "body_too_large")
            default:
                return APIError(status: error.status, message: error.status.reasonPhrase, type: "invalid_request_error")
            }
        }
        return APIError(error)
    }

    func errorResponse(_ error: APIError) -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let retry = error.retryAfter { headers[.retryAfter] = String(retry) }
        if let allow = error.allow { headers[.allow] = allow }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        let body = (try? encoder.encode(error.body)) ?? Data(#"{"error":{"message":"error"}}"#.utf8)
        return Response(status: error.status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

func json(_ value: some Encodable) throws -> Response {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return Response(status: .ok, headers: [.contentType: "application/json"],
                    body: .init(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
}

/// One server-sent event; JSON never contains a raw newline, so one data line carries it.
func sse(_ value: some Encodable, event: String? = nil) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.withoutEscapingSlashes]
    let data = (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    return (event.map { "event: \($0)\n" } ?? "") + "data: \(data)\n\n"
}
