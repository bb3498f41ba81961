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
        try checkTokenLimit(pipeline, prompt: Prompts.chat(history: [], question: ""), options: try generation.options(for: .chat), given: generation)
        var conversation = try Conversation(pipeline: pipeline, model: modelOptions.model, image: image, options: try generation.options(for: .chat), json: json)
        if isatty(STDIN_FILENO) == 1 {
            runInteractive(&conversation)
        } else {
            // Piped: every line is a question and gets one answer line, so answers pair with questions by
            // line number (a blank line gets a blank answer); a failed one fails the run at the end.
            while let line = readLine(strippingNewline: true) {
                let question = line.trimmingCharacters(in: .whitespaces)
                if question.isEmpty { conversation.answerNothing() } else { conversation.ask(question) }
            }
        }
        if conversation.failed { throw ExitCode.failure }
    }

    static let commands = """
        /image FILE   ask about another picture (JPEG or PNG); the conversation starts over
        /reset        forget the conversation, keep the picture
        /save FILE    write the conversation so far as JSON
        /help         this list
        /quit         leave (or Ctrl-D); Ctrl-C drops the line being typed or stops the answer being written
        """

    private func runInteractive(_ conversation: inout Conversation) {
        printError("""
            blip2 chat: \(modelOptions.model), picture \(image). Ask about it; \
            /image FILE switches pictures, /help lists the commands, /quit or Ctrl-D leaves.
            """)
        Interrupt.install()
        let editor = LineEditor()
        reading: while true {
            let text: String
            switch editor.readLine(prompt: "> ") {
            case .end: break reading
            case .interrupted:
                continue   // the line is dropped; the editor has moved to a fresh one, as a shell does
            case .line(let line): text = line.trimmingCharacters(in: .whitespaces)
            }
            if text.isEmpty { continue }
            guard text.hasPrefix("/") else {
                conversation.ask(text, stoppable: true)
                continue
            }
            let parts = text.split(separator: " ", maxSplits: 1).map(String.init)
            let argument = parts.count == 2 ? parts[1].trimmingCharacters(in: .whitespaces) : ""
            switch parts[0] {
            case "/quit", "/exit":
                return
            case "/help":
                printError(Self.commands)
            case "/reset":
                conversation.reset()
                printError("(the conversation is forgotten; same picture)")
            case "/image" where argument.isEmpty:
                printError("/image needs a picture file: /image FILE (JPEG or PNG)")
            case "/image":
                if conversation.switchImage(to: argument) { printError("(now asking about \(argument))") }
            case "/save" where argument.isEmpty:
                printError("/save needs a file name: /save FILE (the conversation as JSON)")
            case "/save":
                conversation.save(to: argument)
            default:
                printError("unknown command \(text); /help lists the commands")
            }
        }
        printError("")
    }
}

/// A chat about one picture at a time, printing each answer as the command's options ask.
private struct Conversation {
    let pipeline: Pipeline
    let model: String
    let options: GenerationOptions
    let json: Bool
    private(set) var image: String
    private var session: ChatSession
    private(set) var failed = false
    /// Every answered turn, for /save: the picture it was about, the question, the answer.
    private var transcript: [SavedTurn] = []

    struct SavedTurn: Encodable {
        let image: String
        let question: String
        let answer: String
    }

    init(pipeline: Pipeline, model: String, image: String, options: GenerationOptions, json: Bool) throws {
        self.pipeline = pipeline
        self.model = model
        self.options = options
        self.json = json
        self.image = image
        do {
            session = ChatSession(pipeline: pipeline, image: try ImageArgument(argument: image).encode(with: pipeline))
        } catch {
            throw failure(error)
        }
    }

    /// `stoppable`: Ctrl-C (on a terminal) stops the answer where it is; the conversation goes on without it.
    mutating func ask(_ question: String, stoppable: Bool = false) {
        let streaming = !json && options.streamsTokens
        let stages = StageIndicator()
        defer { stages.clear() }
        stages.show(streaming ? "reading the prompt" : "generating")
        do {
            let turn = try session.ask(question, options: options, onText: streaming ? { stages.clear(); writeOut($0) } : nil,
                                       shouldStop: stoppable ? { Interrupt.raised } : nil)
            stages.clear()
            transcript.append(SavedTurn(image: image, question: question, answer: turn.result.text))
            if turn.droppedTurns > 0 {
                printError("note: dropped the \(turn.droppedTurns) oldest turn(s) to keep the context within \(pipeline.contextLimit) tokens")
            }
            if json {
                try printJSON(GenerationRecord(image: image, question: question, turn: turn))
            } else {
                writeOut((streaming ? "" : turn.result.text) + "\n")
            }
        } catch GenerationError.cancelled {
            stages.clear()
            if streaming { writeOut("\n") }
            printError("(stopped; that answer is not part of the conversation)")
        } catch {
            _ = failure(error)
            failed = true
        }
    }

    /// A blank question's answer: a blank line (or a record with empty text), so every input line has one.
    func answerNothing() {
        if json {
            // The fields every chat record has, empty.
            struct Blank: Encodable {
                let image: String, question = "", task = "chat", text = ""
            }
            try? printJSON(Blank(image: image))
        } else {
            writeOut("\n")
        }
    }

    /// Writes the conversation so far as JSON (`model`, then `turns`: `image`, `question`, `answer`), through
    /// a temporary file renamed at the end, so a failed write leaves nothing.
    func save(to path: String) {
        struct Saved: Encodable {
            let model: String
            let turns: [SavedTurn]
        }
        let url = URL(fileURLWithPath: path)
        let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        do {
            try checkOutputPath(path, flag: "/save")
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
            try (encoder.encode(Saved(model: model, turns: transcript)) + Data("\n".utf8)).write(to: temporary)
            guard rename(temporary.path, url.path) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
            printError("(saved \(transcript.count) turn(s) to \(path))")
        } catch let error as OutputPathError {
            printError("error: \(error)")
        } catch {
            try? FileManager.default.removeItem(at: temporary)
            printError("error: /save \(path): \(error)")
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
