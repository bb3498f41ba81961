import CEdit
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reads lines typed on a terminal with editing and history (libedit), so the arrow keys move the cursor
/// and recall earlier lines instead of arriving as escape sequences. Prompts and echo go to standard
/// error; standard output keeps only answers.
final class LineEditor {
    enum Input: Equatable {
        case line(String)
        /// Ctrl-C: the line typed so far is dropped.
        case interrupted
        /// Ctrl-D on an empty line, or the end of input.
        case end
    }

    init() {
        // Prompts go to standard error. libedit retries a read that a signal interrupted, so Ctrl-C alone
        // would not end the line; this reader ends it instead (readLine then drops it).
        blip2_edit_configure { file in readCharacter(file.map(fileno) ?? STDIN_FILENO) }
        using_history()
    }

    /// The next line without its newline, Ctrl-C, or the end of input.
    func readLine(prompt: String) -> Input {
        Interrupt.clear()
        guard let raw = readline(prompt) else { return Interrupt.take() ? .interrupted : .end }
        defer { free(raw) }
        if Interrupt.take() { return .interrupted }
        let line = String(cString: raw)
        if !line.allSatisfy(\.isWhitespace) { add_history(raw) }
        return .line(line)
    }
}

/// One character typed on `fd` for libedit: a UTF-8 sequence decoded to its code point (libedit takes
/// characters, not bytes, from a reader of its own), a newline when Ctrl-C interrupted the read, or EOF.
private func readCharacter(_ fd: Int32) -> Int32 {
    func byte() -> Int32? {
        var value: UInt8 = 0
        while true {
            let n = read(fd, &value, 1)
            if n == 1 { return Int32(value) }
            if n < 0, errno == EINTR {
                if Interrupt.raised { return nil }
                continue
            }
            return -1
        }
    }
    guard let lead = byte() else { return 10 }
    guard lead >= 0xC0, lead < 0xF8 else { return lead }   // ASCII, EOF, or a stray continuation byte
    let extra = lead >= 0xF0 ? 3 : lead >= 0xE0 ? 2 : 1
    var scalar = lead & (0x3F >> extra)
    for _ in 0..<extra {
        guard let next = byte() else { return 10 }
        guard next & 0xC0 == 0x80 else { return 0xFFFD }
        scalar = scalar << 6 | (next & 0x3F)
    }
    return scalar
}

/// Ctrl-C in a terminal chat: instead of ending the process (and the conversation), it sets a flag that
/// the line reader and the generation in progress read. The handler is installed without SA_RESTART, so
/// a read blocked in the line editor returns and the editor gives up the line.
enum Interrupt {
    // A plain word the handler can store to: allocated before the handler is installed.
    // Written only by the signal handler and the reading thread, as sig_atomic_t allows.
    nonisolated(unsafe) private static let flag: UnsafeMutablePointer<sig_atomic_t> = {
        let flag = UnsafeMutablePointer<sig_atomic_t>.allocate(capacity: 1)
        flag.pointee = 0
        return flag
    }()

    /// The thread that reads the terminal. The kernel hands a process's signal to any thread that does not
    /// block it (the worker pool's, Dispatch's); only on this one does it interrupt the blocked read.
    // Set once by install(), before the handler that reads it is installed.
    nonisolated(unsafe) private static let reader: UnsafeMutablePointer<pthread_t> = .allocate(capacity: 1)

    static func install() {
        _ = flag
        reader.pointee = pthread_self()
        // The command runs on a Swift concurrency thread, which starts with every signal blocked.
        var interrupt = sigset_t()
        sigemptyset(&interrupt)
        sigaddset(&interrupt, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &interrupt, nil)
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { signal in
            Interrupt.flag.pointee = 1
            if pthread_equal(pthread_self(), Interrupt.reader.pointee) == 0 { pthread_kill(Interrupt.reader.pointee, signal) }
        }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        sigaction(SIGINT, &action, nil)
    }

    static var raised: Bool { flag.pointee != 0 }

    static func clear() { flag.pointee = 0 }

    /// Whether Ctrl-C was pressed since the last `clear()` or `take()`; clears it.
    static func take() -> Bool {
        defer { flag.pointee = 0 }
        return flag.pointee != 0
    }
}
