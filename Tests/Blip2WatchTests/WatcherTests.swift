import Blip2Pipeline
import Foundation
import Testing
@testable import Blip2Watch

/// Frames from memory, one every `interval` seconds; `nil` entries arrive as broken frames; `endless`
/// repeats the last frame until cancelled. `beforeFrame` runs before each frame is sent (its index), so a
/// test can wait for the watcher instead of guessing how long the model takes.
struct MemorySource: FrameSource {
    let frames: [Data?]
    var interval: Double = 0
    var endless = false
    var beforeFrame: (@Sendable (Int) -> Void)? = nil
    var name: String { "memory" }

    func run(into sink: FrameSink) throws {
        var index = 0
        while !sink.isCancelled, index < frames.count || endless {
            beforeFrame?(index)
            if let data = frames[min(index, frames.count - 1)] {
                sink.deliver(data, name: nil)
            } else {
                sink.reject("broken on purpose", name: nil)
            }
            index += 1
            if interval > 0 { usleep(UInt32(interval * 1_000_000)) }
        }
    }
}

/// Lets a source wait for the watcher it feeds, instead of guessing how long the model takes: `watcher` is
/// set before the watcher runs, and its counts say which frames it has dealt with.
final class WatcherProgress: @unchecked Sendable {
    var watcher: FrameWatcher?

    /// Waits until `frames` frames were captioned, found unchanged, dropped or refused as invalid; false if
    /// that never happened within a minute (a bound no working watcher gets near).
    func waitUntilHandled(_ frames: Int) -> Bool {
        let deadline = Date(timeIntervalSinceNow: 60)
        while Date() < deadline {
            if let counts = watcher?.counts,
               counts.framesCaptioned + counts.framesUnchanged + counts.framesDropped + counts.framesInvalid >= frames { return true }
            usleep(1000)
        }
        return false
    }

    /// A `beforeFrame` for `MemorySource`: each frame goes once every earlier one was dealt with.
    var oneAtATime: @Sendable (Int) -> Void {
        { [self] index in #expect(waitUntilHandled(index), "frame \(index) was not dealt with") }
    }
}

@Suite(.serialized) struct FrameWatcherTests {
    static let pipeline = try! Pipeline(modelPath: demoModel)

    @Test func captionsAndAnswersEachNewScene() throws {
        let demo = DemoExamples.loaded
        // Each example three times, each frame sent once the watcher has dealt with the one before: the first
        // of a scene is captioned, its repeats are unchanged, and none is dropped, however fast the model is.
        let frames = DemoExamples.jpegs.flatMap { [$0, $0, $0] }
        let progress = WatcherProgress()
        let source = MemorySource(frames: frames, beforeFrame: progress.oneAtATime)
        var options = WatchOptions()
        options.questions = ["how many objects are there?"]
        let watcher = try FrameWatcher(pipeline: Self.pipeline, source: source, options: options)
        progress.watcher = watcher
        var captions: [CaptionEvent] = []
        let summary = try watcher.run {
            if case .caption(let event) = $0 { captions.append(event) }
        }
        #expect(captions.map(\.text) == demo.examples.map(\.caption))
        #expect(captions.map { $0.answers.map(\.answer) } == demo.examples.map { [$0.objectCount] })
        #expect(captions.map(\.frame) == demo.examples.indices.map { 3 * $0 + 1 })
        #expect(summary.framesSeen == frames.count && summary.framesCaptioned == demo.examples.count && summary.framesInvalid == 0)
        #expect(summary.framesUnchanged == frames.count - demo.examples.count && summary.framesDropped == 0)
        for event in captions {
            #expect(event.answers.first?.question == "how many objects are there?")
            #expect(event.latencyMs >= event.timingsMs.stages.total! && event.timingsMs.stages.vision! > 0 && event.timingsMs.stages.generate! > 0)
        }
        #expect(watcher.latestCaption?.frame == captions.last?.frame)
        #expect(watcher.newestFrame?.number == frames.count)
    }

    @Test func brokenFramesAreCountedAndWarnedAbout() throws {
        // A good frame, ten times a frame broken on arrival and one that fails to decode, a good frame; each
        // sent once the one before was dealt with, so none is dropped.
        let broken: [Data?] = [nil, Data("not an image".utf8)]
        let frames: [Data?] = [DemoExamples.jpegs[0]] + Array(repeating: broken, count: 10).flatMap { $0 } + [DemoExamples.jpegs[1]]
        var options = WatchOptions()
        options.minChange = 0
        let progress = WatcherProgress()
        let watcher = try FrameWatcher(pipeline: Self.pipeline, source: MemorySource(frames: frames, beforeFrame: progress.oneAtATime), options: options)
        progress.watcher = watcher
        var warnings: [String] = []
        var captions: [CaptionEvent] = []
        let started = Date()
        let summary = try watcher.run { event in
            switch event {
            case .caption(let caption): captions.append(caption)
            case .warning(let message): warnings.append(message)
            case .notice: break
            }
        }
        let seconds = Date().timeIntervalSince(started)
        #expect(captions.map(\.frame) == [1, 22])
        #expect(summary.framesSeen == 22 && summary.framesCaptioned == 2 && summary.framesInvalid == 20 && summary.framesDropped == 0)
        #expect(warnings.first?.hasPrefix("frame 2 skipped: broken on purpose (1 invalid so far") == true)
        // At most one warning a second: the 20 broken frames come in far less than that on any machine, and
        // however long they took, no more warnings than the seconds that passed allow.
        #expect(warnings.count >= 1 && warnings.count <= 1 + Int(seconds), "\(warnings.count) warnings in \(seconds) s")
    }

    @Test func stopEndsAnEndlessFeedAfterTheCurrentFrame() async throws {
        var options = WatchOptions()
        options.minChange = 0
        let watcher = try FrameWatcher(pipeline: Self.pipeline, source: MemorySource(frames: DemoExamples.jpegs, interval: 0.01, endless: true),
                                       options: options)
        var lines = 0
        var lastBeforeStop: Int?
        var afterStop = 0
        for try await event in watcher.events() {
            guard case .caption(let caption) = event else { continue }
            lines += 1
            // Seen: captioned, dropped, or the one frame waiting in the slot.
            #expect([0, 1].contains(caption.framesSeen - caption.framesDropped - lines))
            if let lastBeforeStop, caption.frame > lastBeforeStop { afterStop += 1 }
            if lines == 3 {
                // The loop runs ahead of this consumer: what it captioned so far, and at most the frame in progress.
                lastBeforeStop = watcher.latestCaption?.frame
                watcher.stop()
            }
        }
        #expect(lines >= 3)
        #expect(afterStop <= 1)
    }

    @Test func maxFramesAndEveryBoundTheCaptions() throws {
        var options = WatchOptions()
        options.minChange = 0
        options.every = 0.3
        options.maxFrames = 3
        let watcher = try FrameWatcher(pipeline: Self.pipeline, source: MemorySource(frames: DemoExamples.jpegs, interval: 0.02, endless: true),
                                       options: options)
        var starts: [Double] = []
        let summary = try watcher.run { event in
            // When work on the frame began, as the watcher measured it: its arrival plus its wait. (Not "now less
            // the time it took": the handler may be called late on a busy machine.)
            if case .caption(let caption) = event {
                starts.append(caption.arrivalDate.timeIntervalSince1970 + caption.timingsMs.wait! / 1000)
            }
        }
        #expect(summary.ending == .maxFrames && summary.framesCaptioned == 3)
        #expect(summary.framesSeen == summary.framesCaptioned + summary.framesDropped)
        // The tolerance covers only the gap between the two clock readings a frame's start is made of.
        for (a, b) in zip(starts, starts.dropFirst()) { #expect(b - a >= 0.3 - 0.02, "captions \(b - a) s apart") }
    }

    @Test func refusesQuestionsThatCannotFit() throws {
        var options = WatchOptions()
        options.questions = [String(repeating: "why ", count: 600)]
        #expect(throws: PipelineError.self) { try FrameWatcher(pipeline: Self.pipeline, source: MemorySource(frames: []), options: options) }
        options.questions = [" "]
        #expect(throws: PipelineError.self) { try FrameWatcher(pipeline: Self.pipeline, source: MemorySource(frames: []), options: options) }
    }
}

// MARK: - A model shared with other work

/// Sends one frame, then a second once told to (or after a minute, a bound that only ends a broken test), then ends.
struct TwoFrameSource: FrameSource {
    let first: Data, second: Data
    let sendSecond: DispatchSemaphore, sentSecond: DispatchSemaphore
    var name: String { "two frames" }

    func run(into sink: FrameSink) throws {
        sink.deliver(first, name: nil)
        _ = sendSecond.wait(timeout: .now() + 60)
        sink.deliver(second, name: nil)
        sentSecond.signal()
    }
}

/// A model that other work holds when the watcher first asks for it: meanwhile the camera sends a newer frame.
final class BusyModel: ModelAccess, @unchecked Sendable {
    let sendSecond = DispatchSemaphore(value: 0), sentSecond = DispatchSemaphore(value: 0)
    /// Whether the model tells the watcher that other work ran first.
    let reportsWait: Bool
    private var calls = 0

    init(reportsWait: Bool) { self.reportsWait = reportsWait }

    func withModel<T: Sendable>(_ body: @escaping @Sendable (_ waited: Bool) throws -> T) throws -> T {
        calls += 1
        if calls == 1 {
            sendSecond.signal()
            _ = sentSecond.wait(timeout: .now() + 60)
        }
        return try body(reportsWait)
    }
}

// In the serialized suite: one pipeline is not used from two threads at once.
extension FrameWatcherTests {
    @Test func aFrameThatWaitedForTheModelGivesWayToANewerOne() throws {
        let examples = DemoExamples.loaded.examples
        for reportsWait in [true, false] {
            let model = BusyModel(reportsWait: reportsWait)
            let source = TwoFrameSource(first: DemoExamples.jpegs[0], second: DemoExamples.jpegs[1], sendSecond: model.sendSecond,
                                        sentSecond: model.sentSecond)
            let watcher = try FrameWatcher(pipeline: Self.pipeline, source: source, options: WatchOptions(), model: model)
            var captions: [CaptionEvent] = []
            let summary = try watcher.run { if case .caption(let event) = $0 { captions.append(event) } }
            if reportsWait {
                // The first frame waited while the second arrived: only the newer one is captioned, the first is dropped.
                #expect(captions.map(\.frame) == [2])
                #expect(captions.map(\.text) == [examples[1].caption])
                #expect(summary.framesSeen == 2 && summary.framesCaptioned == 1 && summary.framesDropped == 1 && summary.framesUnchanged == 0)
                #expect(captions.first?.timingsMs.modelWait != nil)
            } else {
                // No wait: the frame in hand is captioned even though a newer one came (a camera faster than the
                // decoding must not starve the captions), then the newer one.
                #expect(captions.map(\.frame) == [1, 2])
                #expect(captions.map(\.text) == [examples[0].caption, examples[1].caption])
                #expect(summary.framesDropped == 0)
            }
        }
    }

    @Test func aWatcherWithItsOwnModelReportsNoModelWait() throws {
        let watcher = try FrameWatcher(pipeline: Self.pipeline, source: MemorySource(frames: [DemoExamples.jpegs[0]]), options: WatchOptions())
        var captions: [CaptionEvent] = []
        _ = try watcher.run { if case .caption(let event) = $0 { captions.append(event) } }
        #expect(captions.count == 1)
        #expect(captions.first?.timingsMs.modelWait == nil)
        let line = try #require(try captions.first?.jsonLine())
        #expect(!line.contains("model_wait"))
    }
}
