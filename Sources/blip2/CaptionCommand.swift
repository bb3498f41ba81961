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
          blip2 caption model.blip2 photo.jpg -p "this is a cartoon of" --echo
          blip2 caption model.blip2 a.jpg b.png --beams 5 --json
          rpicam-still -o - | blip2 caption model.blip2 -
        """
    )

    @OptionGroup var modelOptions: ModelOptions

    @Argument(help: "Image files (JPEG or PNG); - reads one from standard input.")
    var images: [String] = []

    @Option(name: [.customShort("p"), .long], help: "Text the caption continues, e.g. \"a photo of\".")
    var prompt: String?

    @Flag(name: .long, help: "Print the prompt before its continuation, as one text.")
    var echo = false

    @OptionGroup var generation: GenerationOptionsGroup

    @Flag(name: .long, help: "One JSON object per image on standard output.")
    var json = false

    @Option(name: .customLong("dump-logits"), help: "Write the float32 logits of every generated step ([steps, vocab]) to this .npy file.")
    var dumpLogits: String?

    func validate() throws {
        guard !images.isEmpty else { throw ValidationError("give at least one image") }
        if images.filter({ $0 == ImageArgument.standardInput }).count > 1 {
            throw ValidationError("standard input (-) holds one image; give it once")
        }
        if dumpLogits != nil, images.count > 1 { throw ValidationError("--dump-logits takes exactly one image") }
        if echo, prompt == nil { printError("warning: --echo has no effect without --prompt") }
        if echo, json { printError("warning: --echo has no effect with --json (each record holds the prompt and the text)") }
    }

    func run() throws {
        let pipeline = try modelOptions.load(threads: generation.threads)
        let task: Blip2Task = prompt == nil ? .caption : .promptedCaption
        try checkTokenLimit(pipeline, prompt: prompt, options: try generation.options(for: task), given: generation)
        var failed = false
        for image in images {
            do {
                try runImageTask(pipeline: pipeline, task: task, image: ImageArgument(argument: image),
                                 prompt: prompt, generation: generation, json: json, label: images.count > 1 && !json,
                                 echo: echo && prompt != nil, dumpLogits: dumpLogits)
            } catch {
                _ = failure(error)
                failed = true
            }
        }
        if failed { throw ExitCode.failure }
    }
}
