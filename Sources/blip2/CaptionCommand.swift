import ArgumentParser
import Blip2CommandLine
import Blip2Pipeline

struct CaptionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "caption",
        abstract: "Caption images, optionally continuing a prompt.",
        discussion: """
        Examples:
          blip2 caption model.blip2 photo.jpg
          blip2 caption model.blip2 photo.jpg --prompt "this is a cartoon of"
          blip2 caption model.blip2 a.jpg b.png --beams 5 --json
        """
    )

    @OptionGroup var modelOptions: ModelOptions

    @Argument(help: "Image files (JPEG or PNG).")
    var images: [String] = []

    @Option(name: .long, help: "Text the caption continues, e.g. \"a photo of\".")
    var prompt: String?

    @OptionGroup var generation: GenerationOptionsGroup

    @Flag(name: .long, help: "One JSON object per image on standard output.")
    var json = false

    @Option(name: .customLong("dump-logits"), help: "Write the float32 logits of every generated step ([steps, vocab]) to this .npy file.")
    var dumpLogits: String?

    func validate() throws {
        guard !images.isEmpty else { throw ValidationError("give at least one image") }
        if dumpLogits != nil, images.count > 1 { throw ValidationError("--dump-logits takes exactly one image") }
    }

    func run() throws {
        let pipeline = try modelOptions.load(threads: generation.threads)
        var failed = false
        for image in images {
            do {
                try runImageTask(pipeline: pipeline, task: prompt == nil ? .caption : .promptedCaption, imagePath: image, prompt: prompt,
                                 generation: generation, json: json, label: images.count > 1 && !json, dumpLogits: dumpLogits)
            } catch {
                printError("error: \(error)")
                failed = true
            }
        }
        if failed { throw ExitCode.failure }
    }
}
