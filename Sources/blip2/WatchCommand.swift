import ArgumentParser
import Blip2CommandLine
import Blip2Pipeline
import Blip2Watch
import Foundation

struct WatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch",
        abstract: "Caption a live camera feed: one line per captioned frame.",
        discussion: """
        SOURCE is - (Motion-JPEG on standard input: JPEGs back to back, as rpicam-vid and ffmpeg write them), \
        an http:// URL of an MJPEG stream (multipart/x-mixed-replace; reconnected with backoff when it drops), \
        a folder (each new JPEG or PNG file once fully written), or a file holding an MJPEG stream.

        While the model works on one frame, newer frames replace each other: the next caption is always of \
        the newest. Frames that differ from the last captioned one by less than --min-change are skipped. \
        Broken frames are skipped with a warning. The end of the stream, SIGINT or SIGTERM end the command \
        with status 0 once the current line is written.

        Examples:
          rpicam-vid -t 0 -n --codec mjpeg -o - | blip2 watch model.blip2 -
          blip2 watch model.blip2 http://camera.local:8080/stream --every 10 --json
          blip2 watch model.blip2 /var/lib/timelapse --ask "is anyone there?"
        """
    )

    @OptionGroup var modelOptions: ModelOptions

    @Argument(help: "-, an http:// URL, a folder, or an MJPEG file.")
    var source: String

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Least time between captions, in seconds.", valueName: "seconds"))
    var every: Double = 0

    @Flag(name: .customLong("every-frame"), help: "Caption every frame in order, dropping none (recorded files and folders; with --min-change 0, unchanged frames too).")
    var everyFrame = false

    @Option(name: .customLong("ask"), help: ArgumentHelp("A question to answer about every captioned frame (repeatable).", valueName: "question"))
    var questions: [String] = []

    @Option(name: .customLong("min-change"), parsing: .unconditional, help: ArgumentHelp("Skip frames that differ from the last captioned one by less than this (0-1: mean luma difference of 32x32 cell averages; 0 captions every frame).", valueName: "x"))
    var minChange: Double = WatchOptions().minChange

    @Flag(name: .long, help: "One JSON object per captioned frame on standard output.")
    var json = false

    @Option(name: .long, help: ArgumentHelp("Also append each frame's JSON line to this file (flushed per line).", valueName: "file"))
    var output: String?

    @Option(name: .customLong("save-frames"), help: ArgumentHelp("Keep each captioned frame in this folder (the newest \(WatchOptions().savedFrameLimit)).", valueName: "dir"))
    var saveFrames: String?

    @Option(name: .customLong("max-frames"), parsing: .unconditional, help: ArgumentHelp("Stop after this many captioned frames.", valueName: "n"))
    var maxFrames: Int?

    @OptionGroup var generation: GenerationOptionsGroup

    func validate() throws {
        guard every >= 0, every.isFinite else { throw invalidValue("--every", every, mustBe: "0 or more seconds") }
        guard (0...1).contains(minChange) else { throw invalidValue("--min-change", minChange, mustBe: "between 0 and 1") }
        if let maxFrames, maxFrames < 1 { throw invalidValue("--max-frames", maxFrames, mustBe: "at least 1") }
        for question in questions where question.trimmingCharacters(in: .whitespaces).isEmpty {
            throw ValidationError("--ask needs a question")
        }
    }

    func run() throws {
        let frameSource = try openCameraSource(source, label: "SOURCE", pipeline: "blip2 watch MODEL -")
        let outputFile: AppendingLineFile?
        do { outputFile = try output.map { try AppendingLineFile(path: $0) } } catch {
            printError("error: --output \(error)")
            throw ExitCode.failure
        }
        let pipeline = try modelOptions.load(threads: generation.threads)
        var options = WatchOptions()
        options.every = every
        options.everyFrame = everyFrame
        options.questions = questions
        options.minChange = minChange
        options.maxFrames = maxFrames
        options.captionOptions = try generation.options(for: .caption)
        options.answerOptions = try generation.options(for: .question)
        options.saveFrames = saveFrames
        try checkTokenLimit(pipeline, prompt: nil, options: options.captionOptions, given: generation)
        for question in questions {
            try checkTokenLimit(pipeline, prompt: Prompts.question(question), options: options.answerOptions, given: generation)
        }
        let watcher: FrameWatcher
        do { watcher = try FrameWatcher(pipeline: pipeline, source: frameSource, options: options) } catch let error as FrameSourceError {
            printError("error: --save-frames \(error)")
            throw ExitCode.failure
        } catch {
            printError("error: \(error)")
            throw ExitCode.failure
        }
        let signals = StopOnSignal { watcher.stop() }
        defer { withExtendedLifetime(signals) {} }

        let json = self.json
        var writeFailure: Error?
        let summary: WatchSummary
        do {
            summary = try watcher.run { event in
                switch event {
                case .caption(let caption):
                    do {
                        let line = try caption.jsonLine()
                        writeOut((json ? line : caption.plainLine()) + "\n")
                        try outputFile?.append(line)
                    } catch {
                        if writeFailure == nil { writeFailure = error }
                        watcher.stop()
                    }
                case .warning(let message):
                    printError("warning: \(message)")
                case .notice(let message):
                    printError("watch: \(message)")
                }
            }
        } catch {
            printError("error: \(error)")
            throw ExitCode.failure
        }
        printError("watch: \(Self.describe(summary))")
        if let writeFailure {
            printError("error: \(writeFailure)")
            throw ExitCode.failure
        }
    }
}

extension WatchCommand {
    /// The totals line written at the end.
    static func describe(_ summary: WatchSummary) -> String {
        let why: String
        switch summary.ending {
        case .end: why = "the stream ended"
        case .stopped: why = "stopped"
        case .maxFrames: why = "reached --max-frames"
        }
        return "\(summary.framesSeen) frames: \(summary.framesCaptioned) captioned, \(summary.framesDropped) dropped for newer ones, "
            + "\(summary.framesUnchanged) unchanged, \(summary.framesInvalid) invalid; \(why)"
    }
}

/// Calls `stop` on the first SIGINT or SIGTERM; a second one ends the process at once.
final class StopOnSignal {
    private var sources: [DispatchSourceSignal] = []

    init(_ stop: @escaping () -> Void) {
        let lock = NSLock()
        var signalled = false
        for signalNumber in [SIGINT, SIGTERM] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler {
                lock.lock()
                let again = signalled
                signalled = true
                lock.unlock()
                if again { exit(128 + signalNumber) }
                printError("watch: stopping after the current frame (signal again to stop at once)")
                stop()
            }
            source.resume()
            sources.append(source)
        }
    }

    deinit {
        for source in sources { source.cancel() }
    }
}
