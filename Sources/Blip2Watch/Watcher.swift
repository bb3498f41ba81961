import Blip2Generation
import Blip2Image
import Blip2Pipeline
import Foundation

// MARK: - Settings and records

public struct WatchOptions: Sendable {
    /// Least time between captions, in seconds (frames that come sooner replace each other).
    public var every: Double = 0
    /// Caption the frames in order, dropping none: the source waits while one is captioned instead of
    /// replacing it with a newer one (recorded files and folders; a live camera would fall behind).
    public var everyFrame = false
    /// Asked about every captioned frame, from the same image encoding as the caption.
    public var questions: [String] = []
    /// Frames that differ from the last captioned one by less than this (0...1, see `ChangeDetector`)
    /// are skipped; 0 captions every frame taken.
    public var minChange: Double = 0.01
    /// Stop after this many captioned frames.
    public var maxFrames: Int?
    public var captionOptions: GenerationOptions = {
        var options = GenerationOptions()
        options.maxNewTokens = Blip2Task.caption.defaultMaxNewTokens
        return options
    }()
    public var answerOptions: GenerationOptions = {
        var options = GenerationOptions()
        options.maxNewTokens = Blip2Task.question.defaultMaxNewTokens
        return options
    }()
    /// Keep each captioned frame in this folder.
    public var saveFrames: String?
    /// How many saved frames are kept.
    public var savedFrameLimit = 100

    public init() {}
}

/// Milliseconds per stage of one captioned frame: the pipeline's stages (`prefill` and `generate` summed over
/// the caption and every answer; `total` from the start of work on the frame to its line) and two of its own.
public struct WatchTimings: Encodable, Sendable {
    /// From the frame's arrival until work on it began (waiting for the model, or for `every`).
    public var wait: Double?
    /// Measuring the change from the last captioned frame.
    public var change: Double?
    /// Waiting for a model shared with other work (a server's requests) to be free; absent when the
    /// watcher has the model to itself.
    public var modelWait: Double?
    public var stages = StageTimings()

    enum CodingKeys: String, CodingKey { case wait, change, modelWait = "model_wait" }

    public init() {}

    /// One flat object: the pipeline's keys (`image_decode`, `vision`, ...) beside `wait` and `change`.
    public func encode(to encoder: Encoder) throws {
        try stages.encode(to: encoder)
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeIfPresent(wait.map(roundedMilliseconds), forKey: .wait)
        try container.encodeIfPresent(change.map(roundedMilliseconds), forKey: .change)
        try container.encodeIfPresent(modelWait.map(roundedMilliseconds), forKey: .modelWait)
    }
}

/// One captioned frame: a line of `blip2 watch` output. JSON field names are a public contract.
public struct CaptionEvent: Encodable, Sendable {
    public struct Answer: Codable, Sendable, Equatable {
        public let question: String
        public let answer: String
    }

    /// The frame's arrival, ISO 8601 in UTC with milliseconds.
    public let time: String
    /// Where the frame came from: its file for a folder, else the source as given (`-`, the URL, the file).
    public let source: String
    /// The frame's number in the source (1-based, every frame counted).
    public let frame: Int
    public let framesSeen: Int
    /// Frames replaced by newer ones before the model got to them.
    public let framesDropped: Int
    /// Frames skipped because they differed too little from the last captioned one.
    public let framesUnchanged: Int
    /// Frames skipped because they were broken, truncated or over the limits.
    public let framesInvalid: Int
    public let text: String
    public let answers: [Answer]
    /// From the frame's arrival to this line.
    public let latencyMs: Double
    public let timingsMs: WatchTimings
    /// Where the frame was saved (`--save-frames`).
    public let savedFrame: String?

    /// Whether `source` names the frame's own file (a folder's frame), not a stream.
    public let sourceIsFile: Bool
    /// The frame's arrival, for display.
    public let arrivalDate: Date
    /// The frame's encoded image as it arrived.
    public let frameData: Data

    enum CodingKeys: String, CodingKey {
        case time, source, frame, framesSeen = "frames_seen", framesDropped = "frames_dropped", framesUnchanged = "frames_unchanged"
        case framesInvalid = "frames_invalid", text, answers, latencyMs = "latency_ms", timingsMs = "timings_ms"
        case savedFrame = "saved_frame"
    }

    /// One line of JSON (no newline).
    public func jsonLine() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    /// `HH:MM:SS FILE: caption` for a folder's frame, `HH:MM:SS SOURCE#N: caption` for a stream's N-th (local
    /// time), then ` | question answer` for each question.
    public func plainLine() -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.dateFormat = "HH:mm:ss"
        let origin = sourceIsFile ? source : "\(source)#\(frame)"
        return (["\(formatter.string(from: arrivalDate)) \(origin): \(text)"] + answers.map { "\($0.question) \($0.answer)" })
            .joined(separator: " | ")
    }
}

/// Totals when watching ends.
public struct WatchSummary: Encodable, Sendable, Equatable {
    public enum Ending: String, Encodable, Sendable {
        /// The stream or file ended.
        case end
        /// `stop()` was called (SIGINT or SIGTERM in the command).
        case stopped
        /// `maxFrames` captions were written.
        case maxFrames = "max_frames"
    }
    public var framesSeen = 0
    public var framesCaptioned = 0
    public var framesDropped = 0
    public var framesUnchanged = 0
    public var framesInvalid = 0
    public var ending = Ending.end

    enum CodingKeys: String, CodingKey {
        case framesSeen = "frames_seen", framesCaptioned = "frames_captioned", framesDropped = "frames_dropped"
        case framesUnchanged = "frames_unchanged", framesInvalid = "frames_invalid", ending
    }
}

public enum WatchEvent: Sendable {
    case caption(CaptionEvent)
    /// A frame was skipped as broken or over the limits (at most one warning a second is sent).
    case warning(String)
    /// The source's news: connected, reconnecting, watching a folder.
    case notice(String)
}

// MARK: - Who runs the model

/// Where the watcher's model work (preprocessing, the image encoding, the caption and the answers) runs.
/// `blip2 watch` runs it at once on the watch loop's thread; a server that shares its one model between
/// its requests and a camera runs it on its model thread, in turn with the requests.
public protocol ModelAccess: Sendable {
    /// Runs `body` with the model to itself and returns its result. `body` is told whether other work ran
    /// first while it waited: its frame may then no longer be the newest.
    func withModel<T: Sendable>(_ body: @escaping @Sendable (_ waited: Bool) throws -> T) throws -> T
}

/// The model is the watcher's alone.
public struct DirectModelAccess: ModelAccess {
    public init() {}
    public func withModel<T: Sendable>(_ body: @escaping @Sendable (_ waited: Bool) throws -> T) throws -> T { try body(false) }
}

// MARK: - The watch loop

/// Captions a camera feed: the source runs on a thread of its own and puts each frame in a one-place slot;
/// the loop takes the newest, skips it if it hardly changed, and otherwise captions it and answers the
/// questions from one encoding of the image. Everything it produces arrives as `WatchEvent`s, through
/// `run`'s callback or the `events()` sequence, so a command line and a server can share it.
// @unchecked Sendable: its mutable state is behind its lock; the model work runs on the one thread that calls run.
public final class FrameWatcher: @unchecked Sendable {
    public let pipeline: Blip2Pipeline
    public let source: FrameSource
    public let options: WatchOptions
    public let model: ModelAccess

    private let intake: FrameIntake
    private let archive: FrameArchive?
    private let stateLock = NSLock()
    private var stopRequested = false
    private var latest: CaptionEvent?
    private let timeFormatter: ISO8601DateFormatter

    /// Checks the options against the model (each question must fit its context) and prepares
    /// `saveFrames`; nothing is read from the source until `run`. `model` says where the model work runs.
    public init(pipeline: Blip2Pipeline, source: FrameSource, options: WatchOptions, model: ModelAccess = DirectModelAccess()) throws {
        try options.captionOptions.validate()
        try options.answerOptions.validate()
        guard options.every >= 0, options.every.isFinite else { throw PipelineError("every must be a finite number of seconds, 0 or more") }
        guard (0...1).contains(options.minChange) else { throw PipelineError("the least change must be between 0 and 1") }
        try pipeline.checkFits(promptIds: pipeline.promptIds(nil), maxNewTokens: options.captionOptions.maxNewTokens)
        for question in options.questions {
            guard !question.trimmingCharacters(in: .whitespaces).isEmpty else { throw PipelineError("a question is empty") }
            try pipeline.checkFits(promptIds: pipeline.promptIds(Prompts.question(question)), maxNewTokens: options.answerOptions.maxNewTokens)
        }
        self.pipeline = pipeline
        self.source = source
        self.options = options
        self.model = model
        archive = try options.saveFrames.map { try FrameArchive(folder: $0, limit: options.savedFrameLimit) }
        intake = FrameIntake()
        intake.waitsForRoom = options.everyFrame
        timeFormatter = ISO8601DateFormatter()
        timeFormatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    }

    /// Ends watching from any thread: the frame being captioned finishes and its line is written, then
    /// `run` returns.
    public func stop() {
        stateLock.lock()
        stopRequested = true
        stateLock.unlock()
        intake.cancel()
    }

    /// The newest frame that arrived, captioned or not (for showing the live picture).
    public var newestFrame: Frame? { intake.newestFrame }

    /// The totals so far (`ending` is meaningful only in what `run` returns).
    public var counts: WatchSummary { intake.counts }

    /// The last captioned frame.
    public var latestCaption: CaptionEvent? {
        stateLock.lock()
        defer { stateLock.unlock() }
        return latest
    }

    /// Watches until the source ends, `stop()` is called, or `maxFrames` captions were made (once per
    /// watcher). `handler` is called for every event, never from two threads at once. Throws when the source fails for good (after
    /// captioning what it delivered) or the model fails.
    public func run(_ handler: @escaping (WatchEvent) -> Void) throws -> WatchSummary {
        intake.handler = handler
        let finished = DispatchSemaphore(value: 0)
        let sourceError = ErrorBox()
        let source = self.source, intake = self.intake
        let thread = Thread {
            do { try source.run(into: intake) } catch { sourceError.error = error }
            intake.slot.end()
            finished.signal()
        }
        thread.name = "blip2-watch source"
        thread.start()

        var detector = ChangeDetector()
        var nextCaption: Date?
        var ending = WatchSummary.Ending.end
        defer { intake.cancel() }
        while true {
            if isStopRequested { ending = .stopped; break }
            if let maxFrames = options.maxFrames, intake.counts.framesCaptioned >= maxFrames { ending = .maxFrames; break }
            guard let frame = intake.slot.take(notBefore: nextCaption) else {
                ending = isStopRequested ? .stopped : .end
                break
            }
            let started = Date()
            if let event = try process(frame, detector: &detector) {
                stateLock.lock()
                latest = event
                stateLock.unlock()
                intake.emit(.caption(event))
                if options.every > 0 { nextCaption = started.addingTimeInterval(options.every) }
            }
        }
        intake.cancel()
        // A source blocked in a read notices the cancellation within a fraction of a second.
        _ = finished.wait(timeout: .now() + 2)
        if ending == .end, let error = sourceError.error { throw error }
        var summary = intake.counts
        summary.ending = ending
        return summary
    }

    /// The same events as an asynchronous sequence; `run` goes on a thread of its own, and ending the
    /// iteration stops it. The sequence finishes after the last event (or throws what `run` threw).
    public func events() -> AsyncThrowingStream<WatchEvent, Error> {
        AsyncThrowingStream { continuation in
            continuation.onTermination = { [weak self] _ in self?.stop() }
            let thread = Thread { [self] in
                do {
                    _ = try run { continuation.yield($0) }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            thread.name = "blip2-watch loop"
            thread.start()
        }
    }

    private var isStopRequested: Bool {
        stateLock.lock()
        defer { stateLock.unlock() }
        return stopRequested
    }

    /// Decodes, compares, and captions one frame; nil when it was skipped.
    private func process(_ frame: Frame, detector: inout ChangeDetector) throws -> CaptionEvent? {
        var timings = WatchTimings()
        let start = DispatchTime.now().uptimeNanoseconds
        timings.wait = milliseconds(from: frame.arrival, to: start)
        let image: RGBImage
        do {
            image = try timed(&timings.stages.imageDecode) { try ImageDecoder.decode(data: frame.data, name: frame.name, options: pipeline.imageOptions) }
        } catch {
            // Image errors start with the name they were given; the warning names the frame once.
            var reason = "\(error)"
            if reason.hasPrefix(frame.name + ": ") { reason.removeFirst(frame.name.count + 2) }
            intake.invalid(frame.name, reason: reason)
            return nil
        }
        let change = timed(&timings.change) { detector.measure(image) }
        if change < options.minChange {
            intake.unchanged()
            return nil
        }
        let measured = timings
        let shared = !(model is DirectModelAccess)
        let requested = DispatchTime.now().uptimeNanoseconds
        let event = try model.withModel { [self] waited -> CaptionEvent? in
            // Work that ran first may have taken long enough for the camera to send a newer frame: that one
            // is captioned instead (only after a wait, or a camera faster than the decoding would starve).
            if waited, intake.slot.isHolding, !options.everyFrame { return nil }
            var timings = measured
            if shared { timings.modelWait = milliseconds(from: requested, to: DispatchTime.now().uptimeNanoseconds) }
            return try caption(frame, image: image, timings: timings, start: start)
        }
        guard let event else {
            intake.superseded()
            return nil
        }
        detector.accept()
        return event
    }

    /// The model's part: one encoding of the image, the caption, the answers.
    private func caption(_ frame: Frame, image: RGBImage, timings: WatchTimings, start: UInt64) throws -> CaptionEvent {
        var timings = timings
        let pixels = timed(&timings.stages.preprocess) { pipeline.preprocessor.pixelValues(for: image) }
        let encoded = pipeline.encode(pixels: pixels)
        timings.stages.vision = encoded.timings.vision
        timings.stages.qformer = encoded.timings.qformer
        var prefill = 0.0, generate = 0.0
        func add(_ result: Blip2Pipeline.Result) {
            prefill += result.timings.prefill ?? 0
            generate += result.timings.generate ?? 0
        }
        let caption = try pipeline.generate(image: encoded, prompt: nil, options: options.captionOptions)
        add(caption)
        var answers: [CaptionEvent.Answer] = []
        for question in options.questions {
            let answer = try pipeline.generate(image: encoded, prompt: Prompts.question(question), options: options.answerOptions)
            add(answer)
            answers.append(CaptionEvent.Answer(question: question, answer: answer.text))
        }
        timings.stages.prefill = prefill
        timings.stages.generate = generate
        var saved: String?
        if let archive {
            do { saved = try archive.save(frame) } catch { intake.emit(.warning("\(error)")) }
        }
        let counts = intake.captioned()
        let end = DispatchTime.now().uptimeNanoseconds
        timings.stages.total = milliseconds(from: start, to: end)
        return CaptionEvent(
            time: timeFormatter.string(from: frame.arrivalDate), source: frame.file ?? source.argument, frame: frame.number, framesSeen: counts.framesSeen,
            framesDropped: counts.framesDropped, framesUnchanged: counts.framesUnchanged, framesInvalid: counts.framesInvalid,
            text: caption.text, answers: answers, latencyMs: roundedMilliseconds(milliseconds(from: frame.arrival, to: end)), timingsMs: timings,
            savedFrame: saved, sourceIsFile: frame.file != nil, arrivalDate: frame.arrivalDate, frameData: frame.data)
    }
}

// @unchecked Sendable: written by the source thread before it signals `finished`, read after the wait.
private final class ErrorBox: @unchecked Sendable {
    var error: Error?
}

private func milliseconds(from start: UInt64, to end: UInt64) -> Double {
    end > start ? Double(end - start) / 1e6 : 0
}

private func timed<T>(_ milliseconds: inout Double?, _ body: () throws -> T) rethrows -> T {
    let start = DispatchTime.now().uptimeNanoseconds
    defer { milliseconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6 }
    return try body()
}

// MARK: - Where frames arrive

/// The sink sources deliver to: numbers frames, keeps the counts, holds the newest frame, and passes
/// events on one at a time.
// @unchecked Sendable: counts, the newest frame and the handler are behind its lock.
final class FrameIntake: FrameSink, @unchecked Sendable {
    let slot = LatestFrameSlot<Frame>()
    var handler: ((WatchEvent) -> Void)?
    /// `WatchOptions.everyFrame`: a frame waits for the one before it to be taken instead of replacing it.
    var waitsForRoom = false

    private let lock = NSLock()
    private var totals = WatchSummary()
    private var newest: Frame?
    private let emitLock = NSLock()
    private var lastWarning: UInt64 = 0
    private var unreported = 0

    /// Warnings about broken frames come at most this often (a stream of them would flood a log).
    static let warningInterval: UInt64 = 1_000_000_000

    var isCancelled: Bool { slot.isCancelled }

    var counts: WatchSummary {
        lock.lock()
        defer { lock.unlock() }
        return totals
    }

    var newestFrame: Frame? {
        lock.lock()
        defer { lock.unlock() }
        return newest
    }

    func deliver(_ data: Data, name: String?) {
        // Outside the lock: the consumer takes it to count what it captioned. There is one producer, so the
        // slot is still empty when this frame is put.
        if waitsForRoom { slot.waitUntilEmpty() }
        let arrival = DispatchTime.now().uptimeNanoseconds
        let date = Date()
        lock.lock()
        totals.framesSeen += 1
        let frame = Frame(number: totals.framesSeen, data: data, name: name ?? "frame \(totals.framesSeen)", arrival: arrival, arrivalDate: date,
                          file: name)
        newest = frame
        if slot.put(frame) { totals.framesDropped += 1 }
        lock.unlock()
    }

    func reject(_ reason: String, name: String?) {
        lock.lock()
        totals.framesSeen += 1
        let number = totals.framesSeen
        lock.unlock()
        invalid(name ?? "frame \(number)", reason: reason)
    }

    func notice(_ message: String) { emit(.notice(message)) }

    /// Counts an invalid frame and warns, at most once per `warningInterval`.
    func invalid(_ name: String, reason: String) {
        lock.lock()
        totals.framesInvalid += 1
        let total = totals.framesInvalid
        lock.unlock()
        emitLock.lock()
        defer { emitLock.unlock() }
        let now = DispatchTime.now().uptimeNanoseconds
        guard lastWarning == 0 || now - lastWarning >= Self.warningInterval else {
            unreported += 1
            return
        }
        let hidden = unreported > 0 ? ", \(unreported) since the last warning" : ""
        handler?(.warning("\(name) skipped: \(reason) (\(total) invalid so far\(hidden))"))
        lastWarning = now
        unreported = 0
    }

    func unchanged() {
        lock.lock()
        totals.framesUnchanged += 1
        lock.unlock()
    }

    /// A frame taken, then passed over for a newer one that arrived while it waited for a shared model.
    func superseded() {
        lock.lock()
        totals.framesDropped += 1
        lock.unlock()
    }

    /// Counts a captioned frame; returns the counts including it.
    func captioned() -> WatchSummary {
        lock.lock()
        defer { lock.unlock() }
        totals.framesCaptioned += 1
        return totals
    }

    /// Stops taking frames; a frame still held counts as dropped.
    func cancel() {
        lock.lock()
        if slot.cancel() { totals.framesDropped += 1 }
        lock.unlock()
    }

    func emit(_ event: WatchEvent) {
        emitLock.lock()
        defer { emitLock.unlock() }
        handler?(event)
    }
}
