import ArgumentParser
import Blip2CommandLine
import Blip2Pipeline
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct ChatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "Chat about an image: one question per line on standard input, one answer per line out.",
        discussion: """
        The image is encoded once. Each question is asked with the previous turns as context
        ("Question: {q} Answer: {a}." joined by spaces); the oldest turns are dropped, with a notice on
        standard error, when the context would pass 512 tokens.

        Examples:
          blip2 chat model.blip2 photo.jpg
          printf 'what is it?\\nwhat color is it?\\n' | blip2 chat model.blip2 photo.jpg --json
        """
    )

    @OptionGroup var modelOptions: ModelOptions

    @Argument(help: "An image file (JPEG or PNG).")
    var image: String

    @OptionGroup var generation: GenerationOptionsGroup

    @Flag(name: .long, help: "One JSON object per answer on standard output.")
    var json = false

    func run() throws {
        let pipeline = try modelOptions.load(threads: generation.threads)
        let encoded: EncodedImage
        do { encoded = try pipeline.encodeImage(contentsOf: URL(fileURLWithPath: image)) } catch {
            printError("error: \(error)")
            throw ExitCode.failure
        }
        let session = ChatSession(pipeline: pipeline, image: encoded)
        let interactive = isatty(STDIN_FILENO) == 1
        let options = generation.options(for: .chat)
        var failed = false
        while true {
            if interactive { FileHandle.standardError.write(Data("> ".utf8)) }
            guard let line = readLine(strippingNewline: true) else { break }
            let question = line.trimmingCharacters(in: .whitespaces)
            if question.isEmpty { continue }
            do {
                let streaming = !json && options.numBeams == 1 && options.numReturnSequences == 1
                let turn = try session.ask(question, options: options, onText: streaming ? writeOut : nil)
                if turn.droppedTurns > 0 {
                    printError("note: dropped the \(turn.droppedTurns) oldest turn(s) to keep the context within \(pipeline.contextLimit) tokens")
                }
                if json {
                    var record = GenerationRecord(task: .chat, image: image, prompt: nil, question: question, result: turn.result)
                    record.droppedTurns = turn.droppedTurns
                    record.reusedPromptIds = turn.reusedIds
                    try printJSON(record)
                } else if streaming {
                    writeOut("\n")
                } else {
                    writeOut(turn.result.text + "\n")
                }
            } catch {
                printError("error: \(error)")
                failed = true
            }
        }
        if failed { throw ExitCode.failure }
    }
}
