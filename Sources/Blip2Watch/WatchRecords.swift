import Blip2Generation
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
