import ArgumentParser
import Blip2CommandLine
import Blip2Generation
import Blip2Pipeline
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct ChatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "Chat about an image: one question per line in, one answer per line out.",
        discussion: """
        The image is encoded once. Each question is asked with the previous turns as context \
        ("Question: {q} Answer: {a}." joined by spaces); the oldest turns are dropped, with a notice on standard \
        error, when the context would pass 512 tokens.

        On a terminal, lines can be edited and earlier ones recalled with the arrow keys, and three commands \
        are understood: /image FILE switches to another picture (encoded once), /reset forgets the \
        conversation, /quit leaves (as does Ctrl-D). From a pipe, every line is a question.

        Examples:
          blip2 chat model.blip2 photo.jpg
          printf 'what is it?\\nwhat color?\\n' | blip2 chat model.blip2 photo.jpg --json
        """
    )

    @OptionGroup var modelOptions: ModelOptions

    @Argument(help: "An image file (JPEG or PNG).")
    var image: String

    @OptionGroup var generation: GenerationOptionsGroup

    @Flag(name: .long, help: "One JSON object per answer on standard output.")
    var json = false

    func validate() throws {
        if image == ImageArgument.standardInput {
            throw ValidationError("chat reads its questions from standard input; give the image as a file")
        }
        try generation.requireOneSequence("chat prints one answer per question and continues from it")
    }

    func run() throws {
        let pipeline = try modelOptions.load(threads: generation.threads)
        // The shortest turn (an empty question, no history) must leave room for the answer.
        try checkTokenLimit(pipeline, prompt: Prompts.chat(history: [], question: ""), options: generation.options(for: .chat), given: generation)
        var conversation = try Conversation(pipeline: pipeline, image: image, options: generation.options(for: .chat), json: json)
        if isatty(STDIN_FILENO) == 1 {
            runInteractive(&conversation)
        } else {
            // Piped: every line (blank ones skipped) is a question; a failed one fails the run at the end.
            while let line = readLine(strippingNewline: true) {
                let question = line.trimmingCharacters(in: .whitespaces)
                if !question.isEmpty { conversation.ask(question) }
            }
        }
        if conversation.failed { throw ExitCode.failure }
    }

    private func runInteractive(_ conversation: inout Conversation) {
        printError("""
            blip2 chat: \(modelOptions.model), picture \(image). Ask about it; \
            /image FILE switches pictures, /reset forgets the conversation, /quit or Ctrl-D leaves.
            """)
        let editor = LineEditor()
        while let line = editor.readLine(prompt: "> ") {
            let text = line.trimmingCharacters(in: .whitespaces)
            if text.isEmpty { continue }
            guard text.hasPrefix("/") else {
                conversation.ask(text)
                continue
            }
            let parts = text.split(separator: " ", maxSplits: 1).map(String.init)
            switch parts[0] {
            case "/quit", "/exit":
                return
            case "/reset":
                conversation.reset()
                printError("(the conversation is forgotten; same picture)")
            case "/image" where parts.count == 2:
                let path = parts[1].trimmingCharacters(in: .whitespaces)
                if conversation.switchImage(to: path) { printError("(now asking about \(path))") }
            default:
                printError("unknown command \(text); the commands are /image FILE, /reset and /quit")
            }
        }
        printError("")
    }
}

/// A chat about one picture at a time, printing each answer as the command's options ask.
private struct Conversation {
    let pipeline: Blip2Pipeline
    let options: GenerationOptions
    let json: Bool
    private(set) var image: String
    private var session: ChatSession
    private(set) var failed = false

    init(pipeline: Blip2Pipeline, image: String, options: GenerationOptions, json: Bool) throws {
        self.pipeline = pipeline
        self.options = options
        self.json = json
        self.image = image
        do {
            session = ChatSession(pipeline: pipeline, image: try ImageArgument(argument: image).encode(with: pipeline))
        } catch {
            throw failure(error)
        }
    }

    mutating func ask(_ question: String) {
        let streaming = !json && options.streamsTokens
        do {
            let turn = try session.ask(question, options: options, onText: streaming ? writeOut : nil)
            if turn.droppedTurns > 0 {
                printError("note: dropped the \(turn.droppedTurns) oldest turn(s) to keep the context within \(pipeline.contextLimit) tokens")
            }
            if json {
                try printJSON(GenerationRecord(image: image, question: question, turn: turn))
            } else {
                writeOut((streaming ? "" : turn.result.text) + "\n")
            }
        } catch {
            _ = failure(error)
            failed = true
        }
    }

    mutating func reset() {
        session = ChatSession(pipeline: pipeline, image: session.image)
    }

    /// Encodes the new picture; on failure says why and keeps the current one.
    mutating func switchImage(to path: String) -> Bool {
        guard path != ImageArgument.standardInput else {
            printError("error: standard input is the terminal here; give the picture as a file")
            return false
        }
        do {
            session = ChatSession(pipeline: pipeline, image: try ImageArgument(argument: path).encode(with: pipeline))
            image = path
            return true
        } catch {
            _ = failure(error)
            return false
        }
    }
}
