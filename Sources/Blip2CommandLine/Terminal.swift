import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes to standard error (messages, progress), keeping standard output for results.
public func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

public var standardErrorIsTerminal: Bool { isatty(STDERR_FILENO) == 1 }

/// "1.50 GB", "312.4 MB", "17 B": decimal units, as disk sizes are sold.
public func formatBytes(_ bytes: Int) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1000, unit < units.count - 1 {
        value /= 1000
        unit += 1
    }
    return unit == 0 ? "\(bytes) B" : String(format: value >= 100 ? "%.1f %@" : "%.2f %@", value, units[unit])
}

/// Formats a count with thousands separators: 3,744,761,856.
public func formatCount(_ value: Int) -> String {
    let digits = String(value.magnitude)
    var out = ""
    for (i, c) in digits.enumerated() {
        if i > 0, (digits.count - i) % 3 == 0 { out.append(",") }
        out.append(c)
    }
    return value < 0 ? "-" + out : out
}

/// A one-line progress bar on standard error with the time left, drawn only when standard error is a
/// terminal and redrawn at most ten times a second.
public final class ProgressBar {
    private let title: String
    private let enabled: Bool
    private let started = Date()
    private var lastDraw = Date.distantPast
    private var drawn = false

    public init(title: String, enabled: Bool = standardErrorIsTerminal) {
        self.title = title
        self.enabled = enabled
    }

    public func update(fraction: Double, detail: String) {
        guard enabled else { return }
        let now = Date()
        guard fraction >= 1 || now.timeIntervalSince(lastDraw) >= 0.1 else { return }
        lastDraw = now
        let fraction = min(max(fraction, 0), 1)
        let width = 30
        let filled = Int((fraction * Double(width)).rounded(.down))
        let bar = String(repeating: "=", count: filled) + (filled < width ? ">" : "") + String(repeating: " ", count: max(0, width - filled - 1))
        let eta = Self.remaining(elapsed: now.timeIntervalSince(started), fraction: fraction).map { " ETA \($0)" } ?? ""
        var line = "\(title) [\(bar)] \(String(format: "%3.0f%%", fraction * 100))\(eta) \(detail)"
        let columns = 120
        if line.count > columns { line = String(line.prefix(columns)) }
        FileHandle.standardError.write(Data("\r\u{1B}[K\(line)".utf8))
        drawn = true
    }

    public func finish() {
        guard enabled, drawn else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
        drawn = false
    }

    /// Time left at the average rate so far, as `m:ss` (or `h:mm:ss`); nil until a second has passed and
    /// 1% is done, when the rate means something.
    static func remaining(elapsed: Double, fraction: Double) -> String? {
        guard elapsed >= 1, fraction >= 0.01, fraction < 1 else { return nil }
        let seconds = Int((elapsed * (1 - fraction) / fraction).rounded())
        let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60)
        return h > 0 ? String(format: "%d:%02d:%02d", h, m, s) : String(format: "%d:%02d", m, s)
    }
}

/// Prints a value as one line of JSON on standard output.
public func printJSON<T: Encodable>(_ value: T, pretty: Bool = false) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
    let data = try encoder.encode(value)
    FileHandle.standardOutput.write(data)
    FileHandle.standardOutput.write(Data("\n".utf8))
}

/// Removes `path` and exits when the user interrupts (Ctrl-C) or the process is terminated, so an
/// interrupted writer leaves nothing behind.
public final class CleanupOnSignal {
    private var sources: [DispatchSourceSignal] = []

    public init(removing path: String) {
        for signalNumber in [SIGINT, SIGTERM, SIGHUP] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler {
                unlink(path)
                printError("interrupted; nothing was written")
                exit(128 + signalNumber)
            }
            source.resume()
            sources.append(source)
        }
    }

    deinit {
        for source in sources { source.cancel() }
    }
}

/// One line on a terminal's standard error saying what runs before the first token ("encoding the image"):
/// on the full-size model that is seconds with nothing else on screen. Each stage replaces the last;
/// `clear()` erases the line before text is printed. Nothing at all when standard error is not a terminal.
public final class StageIndicator {
    private let enabled: Bool
    private var shown = false

    public init(enabled: Bool = standardErrorIsTerminal) {
        self.enabled = enabled
    }

    public func show(_ stage: String) {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K(\(stage)...)".utf8))
        shown = true
    }

    public func clear() {
        guard shown else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
        shown = false
    }
}
