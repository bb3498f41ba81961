import Blip2Generation
import Blip2Model
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

public final class Blip2Server: Sendable {
    let pipeline: Blip2Pipeline
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

    public convenience init(pipeline: Blip2Pipeline, modelPath: String, configuration: ServerConfiguration,
                            latest: (any LatestCaptionProvider)? = nil) {
        self.init(pipeline: pipeline, modelPath: modelPath, configuration: configuration, latest: latest,
                  worker: ModelWorker(capacity: configuration.queue), camera: nil)
    }

    /// With a camera: its options are checked against the model here (a question that cannot fit the
    /// context throws); nothing is read from its source before `run`.
    public convenience init(pipeline: Blip2Pipeline, modelPath: String, configuration: ServerConfiguration,
                            latest: (any LatestCaptionProvider)? = nil, camera: CameraConfiguration?) throws {
        let worker = ModelWorker(capacity: configuration.queue)
        let feed = try camera.map { camera in
            (configuration: camera, watcher: try FrameWatcher(pipeline: pipeline, source: camera.source, options: camera.options,
                                                              model: SharedModelAccess(worker: worker)))
        }
        self.init(pipeline: pipeline, modelPath: modelPath, configuration: configuration, latest: latest,
                  worker: worker, camera: feed)
    }

    private init(pipeline: Blip2Pipeline, modelPath: String, configuration: ServerConfiguration,
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
        let text = pipeline.model.config.textConfig
        let sessionBytes = 2 * text.numHiddenLayers * text.hiddenSize * pipeline.contextLimit * MemoryLayout<Float>.size
        sessions = BoundedCache(capacity: max(1, min(configuration.maxSessions, configuration.sessionMemoryBytes / max(1, sessionBytes))),
                                timeToLive: configuration.sessionTTL)
        images = BoundedCache(capacity: configuration.imageCacheEntries)
        let metrics = self.metrics
        worker.onDepthChange = { metrics.setQueueDepth($0) }
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
        let app = Application(
            router: makeRouter(),
            server: .http1(configuration: .init(idleTimeout: .milliseconds(Int64((configuration.idleTimeout * 1000).rounded())))),
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

    static let routes = ["/", "/index.html", "/health", "/metrics", "/v1/models", "/v1/caption", "/v1/ask", "/v1/chat",
                         "/v1/chat/completions", "/v1/latest", "/v1/camera/latest", "/v1/camera/latest.jpg", "/v1/camera/frame.jpg",
                         "/v1/camera/events"]

    func makeRouter() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.middlewares.add(APIMiddleware(server: self))
        router.get("/") { _, _ in Page.response() }
        router.get("/index.html") { _, _ in Page.response() }
        router.get("/health") { _, _ in try self.health() }
        // The key guards the routes themselves: the router matches `//v1//models` or `/metrics/` to them too.
        let keyed = router.group().add(middleware: KeyCheck(key: configuration.apiKey))
        keyed.get("/metrics") { _, _ in
            self.camera?.updateMetrics()
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(string: self.metrics.text())))
        }
        keyed.get("/v1/models") { _, _ in try self.models() }
        keyed.post("/v1/caption") { request, _ in try await self.generation(request, route: .caption) }
        keyed.post("/v1/ask") { request, _ in try await self.generation(request, route: .ask) }
        keyed.post("/v1/chat") { request, _ in try await self.generation(request, route: .chat) }
        keyed.post("/v1/chat/completions") { request, _ in try await self.completion(request) }
        if let latest {
            keyed.get("/v1/latest") { _, _ in
                guard let record = await latest.latestCaption() else { return Response(status: .noContent) }
                return try json(record)
            }
        } else if camera != nil {
            keyed.get("/v1/latest") { _, _ in try self.withCamera().latest() }
        }
        keyed.get("/v1/camera/latest") { _, _ in try self.withCamera().latest() }
        keyed.get("/v1/camera/latest.jpg") { _, _ in try self.withCamera().image(captioned: true) }
        keyed.get("/v1/camera/frame.jpg") { _, _ in try self.withCamera().image(captioned: false) }
        keyed.get("/v1/camera/events") { _, _ in try self.withCamera().events() }
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
            let sessions: Int
            let sessionCapacity: Int
            let camera: CameraFeed.Status?
            enum CodingKeys: String, CodingKey {
                case status, model, precision, contextTokens = "context_tokens", queueDepth = "queue_depth"
                case queueCapacity = "queue_capacity", sessions, sessionCapacity = "session_capacity", camera
            }
        }
        return try json(Health(model: modelName, precision: precision, contextTokens: pipeline.contextLimit,
                               queueDepth: worker.depth, queueCapacity: configuration.queue, sessions: sessions.count,
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

    func generation(_ request: Request, route: Route) async throws -> Response {
        let ticket = JobTicket()
        // A client that goes away while its request waits or runs cancels it (between tokens).
        return try await request.body.consumeWithInboundCloseHandler({ body in
            let fields = try RequestFields(body: try await collect(body, headers: request.headers),
                                           contentType: request.headers[.contentType])
            let stream = try fields.bool("stream") ?? false
            let work: Work
            let task: Blip2Task
            switch route {
            case .caption:
                let prompt = try fields.string("prompt")
                work = .caption(prompt: prompt)
                task = prompt == nil ? .caption : .promptedCaption
            case .ask:
                guard let question = try fields.string("question"), !question.isEmpty else {
                    throw APIError.badRequest("question: required", param: "question")
                }
                work = .ask(question: question)
                task = .question
            case .chat:
                guard let question = try fields.string("question"), !question.isEmpty else {
                    throw APIError.badRequest("question: required", param: "question")
                }
                let session = try fields.string("session_id")
                if session != nil && fields.image != nil {
                    throw APIError.badRequest("give either image (a new conversation) or session_id (the next turn), not both", param: "session_id")
                }
                work = .chat(question: question, session: session)
                task = .chat
            }
            let needsImage: Bool
            if case .chat(_, let session) = work { needsImage = session == nil } else { needsImage = true }
            if needsImage && fields.image == nil {
                throw APIError.badRequest("image: required (a multipart file part named image, or base64 / a data: URL in JSON)", param: "image")
            }
            let names = FieldNames.native(prompt: route == .caption ? "prompt" : "question")
            let options = try fields.generationOptions(for: task, names: names)
            let image = fields.image
            let job: Job = { onStart, onText, ticket in
                try self.perform(work, image: image, options: options, names: names, ticket: ticket, onStart: onStart, onText: onText)
            }
            if stream {
                return try await self.stream(ticket: ticket, job: job) { event in self.nativeFrames(event) }
            }
            let enqueued = ContinuousClock.now
            let outcome = try await self.worker.run(ticket) { try self.timed(job, ticket: ticket, enqueued: enqueued, onStart: {}, onText: nil) }
            return try json(GenerationResponse(outcome: outcome, model: self.modelName))
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
        let ticket = JobTicket()
        return try await request.body.consumeWithInboundCloseHandler({ body in
            let parsed = try ChatCompletionRequest(body: try await collect(body, headers: request.headers))
            if let model = parsed.model, !model.isEmpty, model != modelName {
                throw APIError(status: .notFound, message: "model \(model) is not served here; GET /v1/models lists \(modelName)",
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
            }
            let names = FieldNames.openAI(maxTokens: parsed.maxTokensField)
            try RequestFields.validate(options, names: names)
            let settled = options
            let work: Work = .completion(history: parsed.history, question: parsed.question)
            let image = parsed.image
            let job: Job = { onStart, onText, ticket in
                try self.perform(work, image: image, options: settled, names: names, ticket: ticket, onStart: onStart, onText: onText)
            }
            let id = "chatcmpl-" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
            let created = Int(Date().timeIntervalSince1970)
            if parsed.stream {
                let opening = chunk(id: id, created: created, delta: .init(role: "assistant", content: ""), finish: nil)
                return try await self.stream(ticket: ticket, job: job, opening: [opening]) { event in
                    self.completionFrames(event, id: id, created: created, includeUsage: parsed.includeUsage)
                }
            }
            let enqueued = ContinuousClock.now
            let outcome = try await self.worker.run(ticket) { try self.timed(job, ticket: ticket, enqueued: enqueued, onStart: {}, onText: nil) }
            return try json(ChatCompletion(id: id, created: created, model: modelName, choices: [
                .init(message: .init(content: outcome.result.text), finishReason: outcome.finishReason),
            ], usage: outcome.usage))
        }, onInboundClosed: { [worker] in if !ticket.isStreaming { worker.cancel(ticket) } })
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
    let server: Blip2Server

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        let path = Self.routerPath(request.uri.path)
        let route = Blip2Server.routes.contains(path) ? path : "other"
        var response: Response
        if let key = server.configuration.apiKey, path.hasPrefix("/v1/") || path == "/metrics", !Self.authorized(request, key: key) {
            response = server.errorResponse(.keyRequired)
        } else {
            do {
                response = try await next(request, context)
            } catch {
                response = server.errorResponse(server.apiError(error, request: request))
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

/// `--api-key` on the routes that need it (nil: open).
struct KeyCheck<Context: RequestContext>: RouterMiddleware {
    let key: String?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let key, !APIMiddleware<Context>.authorized(request, key: key) { throw APIError.keyRequired }
        return try await next(request, context)
    }
}

extension Blip2Server {
    func apiError(_ error: any Error, request: Request) -> APIError {
        if let error = error as? any HTTPResponseError {
            switch error.status {
            case .notFound:
                return APIError(status: .notFound, message: "no such route: \(request.method) \(request.uri.path)", type: "invalid_request_error", code: "not_found")
            case .methodNotAllowed:
                return APIError(status: .methodNotAllowed, message: "\(request.method) is not allowed on \(request.uri.path)", type: "invalid_request_error")
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
        let body = (try? JSONEncoder().encode(error.body)) ?? Data(#"{"error":{"message":"error"}}"#.utf8)
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
