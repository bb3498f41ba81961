import ArgumentParser
import Blip2CommandLine
import Blip2Pipeline
import Foundation

struct AskCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ask",
        abstract: "Answer a question about an image (prompt: \"Question: {q} Answer:\").",
        discussion: """
        Examples:
          blip2 ask model.blip2 photo.jpg "how many dogs are there?"
          blip2 ask model.blip2 photo.jpg "what color is the car?" --json
        """
    )

    @OptionGroup var modelOptions: ModelOptions

    @Argument(help: "An image file (JPEG or PNG); - reads it from standard input.")
    var image: String

    @Argument(help: "The question.")
    var question: String

    @OptionGroup var generation: GenerationOptionsGroup

    @Flag(name: .long, help: "One JSON object on standard output.")
    var json = false

    @Option(name: .customLong("dump-logits"), help: "Write the float32 logits of every generated step ([steps, vocab]) to this .npy file.")
    var dumpLogits: String?

    func validate() throws {
        guard !question.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw ValidationError("the question is empty") }
    }

    func run() throws {
        let pipeline = try modelOptions.load(threads: generation.threads)
        try checkTokenLimit(pipeline, prompt: Prompts.question(question), options: try generation.options(for: .question), given: generation)
        do {
            try runImageTask(pipeline: pipeline, task: .question, image: ImageArgument(argument: image), prompt: Prompts.question(question),
                             question: question, generation: generation, json: json, label: false, dumpLogits: dumpLogits)
        } catch {
            throw failure(error)
        }
    }
}
