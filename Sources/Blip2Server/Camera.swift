import Blip2Watch
import Foundation
import HTTPTypes
import Hummingbird
import Prometheus
import ServiceLifecycle

// MARK: - A camera beside the requests
//
// `blip2 serve --camera SOURCE` runs a `FrameWatcher` whose model work goes through the server's one model
// worker as its background job: one model in memory, one compute context, and visitors first (the camera
// captions when no request waits). The watcher's own slot keeps the newest frame while it waits, so the
// camera never holds more than one frame for the model, and a frame that waited behind requests is passed
// over for a newer one. Captions are pushed to the page as server-sent events.

/// What `blip2 serve --camera` watches.
public struct CameraConfiguration: Sendable {
    public var source: FrameSource
    public var options: WatchOptions
    /// The camera's news, one line each: connected, reconnecting, a skipped frame, the end of the stream.
    public var log: @Sendable (String) -> Void

    public init(source: FrameSource, options: WatchOptions = WatchOptions(), log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.source = source
        self.options = options
        self.log = log
    }
}

/// The watcher's model work as the worker's background job; the watch loop's thread waits for it.
struct SharedModelAccess: ModelAccess {
    let worker: ModelWorker

    func withModel<T: Sendable>(_ body: @escaping @Sendable (_ waited: Bool) throws -> T) throws -> T {
        let handoff = Handoff<T>()
        try worker.submitBackground(run: { waited in handoff.set(Result { try body(waited) }) },
                                    refuse: { handoff.set(.failure($0)) })
        return try handoff.wait()
    }

    /// One result handed from the slot thread to the waiting one.
    // @unchecked Sendable: the result is written before the semaphore is signalled and read after the wait.
    private final class Handoff<T>: @unchecked Sendable {
        private let done = DispatchSemaphore(value: 0)
        private var result: Result<T, any Error>?
        func set(_ value: Result<T, any Error>) {
            result = value
            done.signal()
        }
        func wait() throws -> T {
            done.wait()
            return try result!.get()
        }
    }
}

/// Event-stream listeners, each with a bounded buffer of its own: a client that reads slowly (or is gone
/// without the connection saying so yet) loses its oldest events instead of holding memory.
// @unchecked Sendable: the listener list is behind its lock.
final class CameraListeners: @unchecked Sendable {
    /// Events kept per listener that has not read them yet.
    static let buffered = 16
    let capacity: Int
    private let lock = NSLock()
    private var streams: [Int: AsyncStream<String>.Continuation] = [:]
    private var nextId = 0
    private var closed = false

    init(capacity: Int) { self.capacity = capacity }

    var count: Int { lock.withLock { streams.count } }

    /// A new listener, sent `opening` first; nil when `capacity` listen already or the server is stopping.
    func add(opening: [String]) -> (id: Int, events: AsyncStream<String>)? {
        let (events, continuation) = AsyncStream<String>.makeStream(bufferingPolicy: .bufferingNewest(Self.buffered))
        lock.lock()
        defer { lock.unlock() }
        guard !closed, streams.count < capacity else { return nil }
        nextId += 1
        streams[nextId] = continuation
        for frame in opening { continuation.yield(frame) }
        return (nextId, events)
    }

    func remove(_ id: Int) {
        let continuation = lock.withLock { streams.removeValue(forKey: id) }
        continuation?.finish()
    }

    func send(_ frame: String) {
        lock.withLock { for continuation in streams.values { continuation.yield(frame) } }
    }

    /// Ends every stream (so their responses finish) and refuses new listeners.
    func close() {
        let ended = lock.withLock { () -> [AsyncStream<String>.Continuation] in
            closed = true
            defer { streams.removeAll() }
            return Array(streams.values)
        }
        for continuation in ended { continuation.finish() }
    }
}

// @unchecked Sendable: its status and latest results are behind its lock; the watcher is Sendable on its own terms.
final class CameraFeed: @unchecked Sendable {
    enum State: String, Encodable {
        /// Reading the source (or reconnecting to it).
        case watching
        /// The pipe or file ended; the last caption stays.
        case ended
        /// The source or the model failed for good; `error` says why.
        case failed
        /// The server is stopping.
        case stopped
    }

    /// `/health`'s `camera`, and `camera` in the latest caption's JSON: the totals now.
    struct Status: Encodable {
        let source: String
        let state: State
        let framesSeen: Int
        let framesCaptioned: Int
        let framesDropped: Int
        let framesUnchanged: Int
        let framesInvalid: Int
        let listeners: Int
        /// The source's last notice or warning.
        let message: String?
        let error: String?
        enum CodingKeys: String, CodingKey {
            case source, state, framesSeen = "frames_seen", framesCaptioned = "frames_captioned", framesDropped = "frames_dropped"
            case framesUnchanged = "frames_unchanged", framesInvalid = "frames_invalid", listeners, message, error
        }
    }

    /// A captioned frame as the API shows it: `blip2 watch --json`'s line (its counts as of that caption),
    /// where its picture is, the model, and the camera's totals now.
    struct Latest: Encodable {
        let event: CaptionEvent
        let model: String
        let camera: Status
        enum Keys: String, CodingKey { case image, model, camera }
        func encode(to encoder: any Encoder) throws {
            try event.encode(to: encoder)
            var container = encoder.container(keyedBy: Keys.self)
            try container.encode(CameraFeed.latestImagePath, forKey: .image)
            try container.encode(model, forKey: .model)
            try container.encode(camera, forKey: .camera)
        }
    }

    static let latestImagePath = "/v1/camera/latest.jpg"
    /// How often listeners hear of a new frame at most (the page then fetches it), and how often a stream
    /// with no frames gets a comment, so that a client gone without a word is noticed by a failed write.
    static let frameEventInterval = Duration.milliseconds(250)
    static let keepAliveInterval = Duration.seconds(15)

    let watcher: FrameWatcher
    let listeners: CameraListeners
    let model: String
    private let log: @Sendable (String) -> Void
    private let lock = NSLock()
    private var state = State.watching
    private var message: String?
    private var error: String?
    private var lastFrameSent = 0
    private var thread: Thread?
    private let finished = DispatchSemaphore(value: 0)
    private let metrics: CameraMetrics

    init(watcher: FrameWatcher, log: @escaping @Sendable (String) -> Void, model: String, registry: PrometheusCollectorRegistry,
         maxListeners: Int) {
        self.watcher = watcher
        listeners = CameraListeners(capacity: maxListeners)
        self.log = log
        self.model = model
        metrics = CameraMetrics(registry: registry)
    }

    // MARK: Running

    /// Starts watching on a thread of its own.
    func start() {
        let thread = Thread { [self] in
            let ending: State
            do {
                let summary = try watcher.run { [self] event in handle(event) }
                ending = summary.ending == .end ? .ended : .stopped
                if ending == .ended { log("\(watcher.source.name): the stream ended; the last caption stays") }
            } catch WorkerError.shuttingDown {
                ending = .stopped
            } catch {
                ending = .failed
                lock.withLock { self.error = "\(error)" }
                log("error: \(error)")
            }
            lock.withLock { if state != .stopped { state = ending } }
            sendStatus()
            finished.signal()
        }
        thread.name = "blip2-serve camera"
        self.thread = thread
        thread.start()
    }

    /// Stops watching (the caption in progress finishes) and ends every event stream.
    func stop() {
        lock.withLock { state = .stopped }
        watcher.stop()
        listeners.close()
    }

    /// Waits (bounded) for the watch thread to end, once the worker refused or ran its last job.
    func join(timeout: Double) {
        if thread != nil { _ = finished.wait(timeout: .now() + timeout) }
    }

    var isStopped: Bool { lock.withLock { state == .stopped } }

    private func handle(_ event: WatchEvent) {
        switch event {
        case .caption(let caption):
            metrics.caption(latencyMs: caption.latencyMs)
            if let frame = try? render(caption, event: "caption") { listeners.send(frame) }
        case .warning(let text):
            lock.withLock { message = text }
            log("warning: \(text)")
            sendStatus()
        case .notice(let text):
            lock.withLock { message = text }
            log(text)
            sendStatus()
        }
    }

    /// Called every `frameEventInterval`: a `frame` event when a new frame arrived; otherwise, every
    /// `keepAliveInterval`, a comment.
    func tick(keepAlive: Bool) {
        if let frame = watcher.newestFrame {
            let isNew = lock.withLock {
                defer { lastFrameSent = frame.number }
                return frame.number != lastFrameSent
            }
            if isNew {
                listeners.send(frameEvent(frame))
                return
            }
        }
        if keepAlive { listeners.send(": keep-alive\n\n") }
    }

    /// A `frame` event: which frame `/v1/camera/frame.jpg` now serves.
    struct FrameNews: Encodable {
        let frame: Int
        let framesSeen: Int
        let image: String
        enum CodingKeys: String, CodingKey { case frame, framesSeen = "frames_seen", image }
    }

    private func frameEvent(_ frame: Frame) -> String {
        sse(FrameNews(frame: frame.number, framesSeen: watcher.counts.framesSeen, image: "/v1/camera/frame.jpg"), event: "frame")
    }

    private func sendStatus() { listeners.send(sse(status(), event: "status")) }

    // MARK: What the routes answer

    func status() -> Status {
        let counts = watcher.counts
        return lock.withLock {
            Status(source: watcher.source.name, state: state, framesSeen: counts.framesSeen, framesCaptioned: counts.framesCaptioned,
                   framesDropped: counts.framesDropped, framesUnchanged: counts.framesUnchanged, framesInvalid: counts.framesInvalid,
                   listeners: listeners.count, message: message, error: error)
        }
    }

    private func render(_ caption: CaptionEvent, event: String) throws -> String {
        sse(Latest(event: caption, model: model, camera: status()), event: event)
    }

    /// `GET /v1/camera/latest`: 204 before the first caption.
    func latest() throws -> Response {
        guard let caption = watcher.latestCaption else { return Response(status: .noContent) }
        return try json(Latest(event: caption, model: model, camera: status()))
    }

    /// `GET /v1/camera/latest.jpg` (the captioned frame) and `/v1/camera/frame.jpg` (the newest): the bytes
    /// as the camera sent them; 204 before there is one.
    func image(captioned: Bool) -> Response {
        let found: (data: Data, number: Int, date: Date)?
        if captioned {
            found = watcher.latestCaption.map { ($0.frameData, $0.frame, $0.arrivalDate) }
        } else {
            found = watcher.newestFrame.map { ($0.data, $0.number, $0.arrivalDate) }
        }
        guard let found else { return Response(status: .noContent) }
        var headers: HTTPFields = [.contentType: Self.mediaType(found.data), .cacheControl: "no-store"]
        if let number = HTTPField.Name("X-Frame-Number") { headers[number] = String(found.number) }
        if let time = HTTPField.Name("X-Frame-Time") { headers[time] = Self.timeFormat.format(found.date) }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: found.data)))
    }

    /// A value, so requests on several threads share it safely (a formatter object is not Sendable).
    private static let timeFormat = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    /// A stream's frames are JPEGs; a folder may hold PNGs.
    static func mediaType(_ data: Data) -> String {
        data.starts(with: [0x89, 0x50, 0x4E, 0x47]) ? "image/png" : "image/jpeg"
    }

    /// `GET /v1/camera/events`: `status` at once, the latest `caption` if there is one, then each event as it
    /// comes. 503 past the listener limit.
    func events() throws -> Response {
        var opening = [sse(status(), event: "status")]
        if let frame = watcher.newestFrame { opening.append(frameEvent(frame)) }
        if let caption = watcher.latestCaption { opening.append(try render(caption, event: "caption")) }
        guard let listener = listeners.add(opening: opening) else {
            if isStopped { throw APIError(WorkerError.shuttingDown) }
            throw APIError(status: .serviceUnavailable, message: "\(listeners.capacity) clients follow the camera already; retry later",
                           type: "server_busy", code: "too_many_listeners", retryAfter: 5)
        }
        let listeners = self.listeners
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: ResponseBody { writer in
            defer { listeners.remove(listener.id) }
            for await frame in listener.events { try await writer.write(ByteBuffer(string: frame)) }
            try await writer.finish(nil)
        })
    }

    /// Brings the frame counters up to the watcher's totals (called before /metrics is written).
    func updateMetrics() {
        metrics.update(watcher.counts, listeners: listeners.count)
    }
}

/// The camera's Prometheus series: frames by what became of them, caption latency, listeners.
// @unchecked Sendable: Prometheus series are thread-safe; its own totals are behind its lock.
final class CameraMetrics: @unchecked Sendable {
    private let lock = NSLock()
    /// The totals at the last report (nil before the first).
    private var reported: WatchSummary?
    private let seen, captioned, dropped, unchanged, invalid: Counter
    private let latency: ValueHistogram
    private let listeners: Gauge

    init(registry: PrometheusCollectorRegistry) {
        func frames(_ outcome: String) -> Counter {
            registry.makeCounter(descriptor: .init(metricName: "blip2_camera_frames", unitName: "total",
                                                   helpText: "Camera frames by outcome: seen, then captioned, dropped for a newer one, unchanged or invalid"),
                                 labels: [("outcome", outcome)])
        }
        seen = frames("seen")
        captioned = frames("captioned")
        dropped = frames("dropped")
        unchanged = frames("unchanged")
        invalid = frames("invalid")
        latency = registry.makeValueHistogram(descriptor: .init(metricName: "blip2_camera_caption_latency", unitName: "seconds",
                                                                helpText: "From a camera frame's arrival to its caption"),
                                              buckets: ServerMetrics.buckets)
        listeners = registry.makeGauge(descriptor: .init(metricName: "blip2_camera_listeners", unitName: "",
                                                         helpText: "Clients following /v1/camera/events"))
    }

    func caption(latencyMs: Double) { latency.record(latencyMs / 1000) }

    /// Counters only go up: each is raised by what the totals gained since the last report.
    func update(_ counts: WatchSummary, listeners count: Int) {
        lock.withLock {
            func raise(_ counter: Counter, _ total: KeyPath<WatchSummary, Int>) {
                counter.increment(by: Int64(max(0, counts[keyPath: total] - (reported?[keyPath: total] ?? 0))))
            }
            raise(seen, \.framesSeen)
            raise(captioned, \.framesCaptioned)
            raise(dropped, \.framesDropped)
            raise(unchanged, \.framesUnchanged)
            raise(invalid, \.framesInvalid)
            reported = counts
        }
        listeners.set(Double(count))
    }
}

/// Ticks the camera's frame events and stops the camera first when the server shuts down, so that no event
/// stream holds the HTTP server open and the watcher lets go of the model before the queue drains.
struct CameraService: Service {
    let camera: CameraFeed

    func run() async throws {
        await withGracefulShutdownHandler {
            let ticksPerKeepAlive = Int(CameraFeed.keepAliveInterval / CameraFeed.frameEventInterval)
            var tick = 0
            while !camera.isStopped {
                tick += 1
                camera.tick(keepAlive: tick % ticksPerKeepAlive == 0)
                do { try await Task.sleep(for: CameraFeed.frameEventInterval) } catch { break }
            }
        } onGracefulShutdown: {
            camera.stop()
        }
        camera.stop()
    }
}
