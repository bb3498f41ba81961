import CEdit
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reads lines typed on a terminal with editing and history (libedit), so the arrow keys move the cursor
/// and recall earlier lines instead of arriving as escape sequences. Prompts and echo go to standard
/// error; standard output keeps only answers.
final class LineEditor {
    init() {
        rl_outstream = stderr
        using_history()
    }

    /// The next line without its newline, or nil at end of input (Ctrl-D).
    func readLine(prompt: String) -> String? {
        guard let raw = readline(prompt) else { return nil }
        defer { free(raw) }
        let line = String(cString: raw)
        if !line.allSatisfy(\.isWhitespace) { add_history(raw) }
        return line
    }
}
