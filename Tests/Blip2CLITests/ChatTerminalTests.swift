import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A pseudo-terminal: the child gets the terminal side as standard input and error, the test types on the
/// other side and reads what the child draws there.
final class PseudoTerminal: @unchecked Sendable {
    let controller: Int32
    let terminal: FileHandle
    private let lock = NSLock()
    private var screen = Data()
    private var reader: Thread?

    init() throws {
        // posix_openpt and friends are hidden by Swift's Glibc module; these are the ioctls they make
        // (Linux's asm-generic numbers, the same on x86-64 and AArch64).
        let unlockRequest: UInt = 0x4004_5431, numberRequest: UInt = 0x8004_5430   // TIOCSPTLCK, TIOCGPTN
        controller = open("/dev/ptmx", O_RDWR | O_NOCTTY)
        var unlock: CInt = 0, number: CUnsignedInt = 0
        guard controller >= 0, ioctl(controller, unlockRequest, &unlock) == 0, ioctl(controller, numberRequest, &number) == 0 else {
            throw POSIXError(.ENODEV)
        }
        let fd = open("/dev/pts/\(number)", O_RDWR | O_NOCTTY)
        guard fd >= 0 else { throw POSIXError(.ENODEV) }
        terminal = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        // Everything the child draws is read at once, so it never blocks on a full terminal buffer.
        let thread = Thread { [controller, weak self] in
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = read(controller, &buffer, buffer.count)
                guard n > 0, let self else { return }
                self.lock.lock()
                self.screen.append(contentsOf: buffer[0..<n])
                self.lock.unlock()
            }
        }
        thread.start()
        reader = thread
    }

    deinit { close(controller) }

    var text: String {
        lock.lock()
        defer { lock.unlock() }
        return String(decoding: screen, as: UTF8.self)
    }

    func type(_ keys: String) {
        _ = keys.utf8CString.withUnsafeBufferPointer { write(controller, $0.baseAddress, $0.count - 1) }
    }
}

/// Collects a pipe's bytes on another thread.
final class PipeCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()

    init(_ pipe: Pipe) {
        let handle = pipe.fileHandleForReading
        Thread { [weak self] in
            while true {
                let chunk = handle.availableData
                guard !chunk.isEmpty, let self else { return }
                self.lock.lock()
                self.data.append(chunk)
                self.lock.unlock()
            }
        }.start()
    }

    var text: String {
        lock.lock()
        defer { lock.unlock() }
        return String(decoding: data, as: UTF8.self)
    }
}

/// Polls `condition` every 50 ms for at most `seconds`; true if it came true.
func wait(seconds: Double, until condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(50_000)
    }
    return condition()
}

@Suite struct ChatTerminalTests {
    @Test func chatOnATerminalEditsRecallsAndSwitchesPictures() throws {
        let model = CommandLineConventionTests.demoModel
        let examples = packageRoot.appendingPathComponent("Models/examples")
        let first = examples.appendingPathComponent("row-42-16.png").path
        let second = examples.appendingPathComponent("single-42-11.png").path
        // Each answer is a chat's first turn, whose prompt is exactly ask's.
        func ask(_ image: String, _ question: String) throws -> String {
            let result = try blip2.run(["ask", model, image, question])
            #expect(result.status == 0, "\(result.stderr)")
            return result.stdout
        }
        let expected = [try ask(first, "what color is the cross?"), try ask(first, "what color is the cross?"),
                        try ask(second, "what shape is it?")]

        #expect(first == CommandLineConventionTests.demoImage)
        let (chat, terminal, answers) = try Self.startChat()
        defer { if chat.isRunning { chat.terminate() } }
        func lines() -> [String] { answers.text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init) }

        #expect(wait(seconds: 120) { terminal.text.contains("> ") }, "a prompt: \(terminal.text)")
        #expect(terminal.text.contains("/image FILE"), "the banner names the commands: \(terminal.text)")
        // A typo fixed with the arrow keys and backspace, as a person types.
        terminal.type("what color is the crass\u{1b}[D\u{1b}[D\u{7f}o\u{1b}[C\u{1b}[C?\r")
        #expect(wait(seconds: 120) { lines().count == 1 }, "\(answers.text) / \(terminal.text)")
        // Forget the conversation, then recall the question from history (two lines up, past /reset).
        terminal.type("/reset\r")
        #expect(wait(seconds: 120) { terminal.text.contains("forgotten") }, "\(terminal.text)")
        terminal.type("\u{1b}[A\u{1b}[A\r")
        #expect(wait(seconds: 120) { lines().count == 2 }, "\(answers.text) / \(terminal.text)")
        terminal.type("/image \(second)\r")
        #expect(wait(seconds: 120) { terminal.text.contains("now asking about") }, "\(terminal.text)")
        terminal.type("what shape is it?\r")
        #expect(wait(seconds: 120) { lines().count == 3 }, "\(answers.text) / \(terminal.text)")
        terminal.type("/image missing.png\r/nonsense\r")
        #expect(wait(seconds: 120) { terminal.text.contains("missing.png: no such file") && terminal.text.contains("unknown command /nonsense") },
                "\(terminal.text)")
        terminal.type("/quit\r")
        #expect(wait(seconds: 120) { !chat.isRunning }, "chat left on /quit")
        if !chat.isRunning { #expect(chat.terminationStatus == 0) }

        #expect(lines().map { $0 + "\n" } == expected, "\(answers.text)")
        #expect(!answers.text.contains("["), "no escape sequence reached the model as text")
    }

    /// A chat process on a new pseudo-terminal (standard input and error), answers collected from a pipe.
    /// util-linux's setsid makes the terminal the chat's controlling terminal, as a login shell's is, so a
    /// typed Ctrl-C reaches it as SIGINT.
    static func startChat(_ extra: [String] = []) throws -> (Process, PseudoTerminal, PipeCollector) {
        let terminal = try PseudoTerminal()
        let chat = Process()
        chat.executableURL = URL(fileURLWithPath: "/usr/bin/setsid")
        chat.arguments = ["--wait", "--ctty", blip2.url.path, "chat", CommandLineConventionTests.demoModel, CommandLineConventionTests.demoImage] + extra
        chat.environment = ["TERM": "xterm", "PATH": "/usr/bin:/bin", "HOME": FileManager.default.temporaryDirectory.path]
        let output = Pipe()
        chat.standardInput = terminal.terminal
        chat.standardError = terminal.terminal
        chat.standardOutput = output
        let answers = PipeCollector(output)
        try chat.run()
        return (chat, terminal, answers)
    }

    /// Ctrl-C drops the line being typed and keeps the session; /help, /image without a file, /save.
    @Test func controlCDropsTheLineAndCommandsExplainThemselves() throws {
        let scratch = Scratch()
        let question = "what color is the cross?"
        let expected = try blip2.run(["ask", CommandLineConventionTests.demoModel, CommandLineConventionTests.demoImage, question]).stdout
        let (chat, terminal, answers) = try Self.startChat()
        defer { if chat.isRunning { chat.terminate() } }
        func prompts() -> Int { terminal.text.components(separatedBy: "> ").count - 1 }
        #expect(wait(seconds: 120) { prompts() == 1 }, "\(terminal.text)")
        terminal.type("how many")
        #expect(wait(seconds: 120) { terminal.text.hasSuffix("how many") }, "\(terminal.text)")
        terminal.type("\u{03}")
        #expect(wait(seconds: 120) { prompts() == 2 }, "a fresh prompt after Ctrl-C: \(terminal.text)")
        #expect(chat.isRunning, "Ctrl-C at the prompt keeps the conversation")
        terminal.type("/help\r")
        #expect(wait(seconds: 120) { terminal.text.contains("/save FILE") && terminal.text.contains("/reset") }, "\(terminal.text)")
        terminal.type("/image\r")
        #expect(wait(seconds: 120) { terminal.text.contains("/image needs a picture file: /image FILE") }, "\(terminal.text)")
        terminal.type(question + "\r")
        #expect(wait(seconds: 120) { answers.text.hasSuffix("\n") }, "\(answers.text) / \(terminal.text)")
        #expect(answers.text == expected, "the dropped line never reached the model: \(answers.text)")
        let saved = scratch.path("chat.json")
        terminal.type("/save \(saved)\r")
        #expect(wait(seconds: 120) { terminal.text.contains("saved 1 turn") }, "\(terminal.text)")
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: saved))) as? [String: Any]
        #expect(object?["model"] as? String == CommandLineConventionTests.demoModel)
        let turns = object?["turns"] as? [[String: String]]
        #expect(turns == [["image": CommandLineConventionTests.demoImage, "question": question,
                           "answer": expected.trimmingCharacters(in: .newlines)]], "\(String(describing: turns))")
        terminal.type("/save \(scratch.path("no/such/folder/chat.json"))\r")
        #expect(wait(seconds: 120) { terminal.text.contains("does not exist") }, "\(terminal.text)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path("no")))
        terminal.type("/quit\r")
        #expect(wait(seconds: 120) { !chat.isRunning })
        if !chat.isRunning { #expect(chat.terminationStatus == 0) }
    }

    /// Ctrl-C while an answer is being written stops it; the next question is answered as the first turn.
    @Test func controlCStopsTheAnswerInProgress() throws {
        // At least 479 tokens per answer: far longer than the time the test needs to press Ctrl-C.
        let (chat, terminal, answers) = try Self.startChat(["-n", "480", "--min-new-tokens", "479"])
        defer { if chat.isRunning { chat.terminate() } }
        #expect(wait(seconds: 120) { terminal.text.contains("> ") }, "\(terminal.text)")
        terminal.type("what color is the cross?\r")
        #expect(wait(seconds: 120) { !answers.text.isEmpty }, "\(terminal.text)")
        terminal.type("\u{03}")
        #expect(wait(seconds: 120) { terminal.text.contains("(stopped;") }, "\(terminal.text)")
        #expect(chat.isRunning)
        let stopped = answers.text
        #expect(stopped.hasSuffix("\n") && stopped.split(separator: " ").count < 400, "stopped early: \(stopped)")
        terminal.type("\u{04}")
        #expect(wait(seconds: 120) { !chat.isRunning })
        if !chat.isRunning { #expect(chat.terminationStatus == 0, "a stopped answer is not a failure") }
    }

    @Test func endOfInputLeavesTheTerminalChat() throws {
        let (chat, terminal, _) = try Self.startChat()
        defer { if chat.isRunning { chat.terminate() } }
        #expect(wait(seconds: 120) { terminal.text.contains("> ") }, "\(terminal.text)")
        terminal.type("\u{04}")   // Ctrl-D
        #expect(wait(seconds: 120) { !chat.isRunning })
        if !chat.isRunning { #expect(chat.terminationStatus == 0) }
    }
}
