import Blip2Generation
import Blip2Image
import Blip2Pipeline
import Foundation

// MARK: - The watch loop

/// Captions a camera feed: the source runs on a thread of its own and puts each frame in a one-place slot;
/// the loop takes the newest, skips it if it hardly changed, and otherwise captions it and answers the
/// questions from one encoding of the image. Everything it produces arrives as `WatchEvent`s, through
/// `run`'s callback or the `events()` sequence, so a command line and a server can share it.
// @unchecked Sendable: its mutable state is behind its lock; the model work runs on the one thread that calls run.
public final class FrameWatcher: @unchecked Sendable {
    public let pipeline: Pipeline
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
    public init(pipeline: Pipeline, source: FrameSource, options: WatchOptions, model: ModelAccess = DirectModelAccess()) throws {
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
        func add(_ result: Pipeline.Result) {
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
