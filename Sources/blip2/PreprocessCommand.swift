import ArgumentParser
import Blip2CommandLine
import Blip2Core
import Blip2Pipeline
import Foundation

struct PreprocessCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "preprocess",
        abstract: "Write the float32 pixel tensor [3, H, W] the model sees for an image, as .npy.",
        discussion: "Example:\n  blip2 preprocess model.blip2 photo.jpg --output pixels.npy"
    )

    @OptionGroup var modelOptions: ModelOptions

    @Argument(help: "An image file (JPEG or PNG).")
    var image: String

    @Option(name: .long, help: "The .npy file to write.")
    var output: String

    func run() throws {
        do { try checkOutputPath(output, flag: "--output") } catch {
            printError("error: \(error)")
            throw ExitCode.failure
        }
        let pipeline = try modelOptions.load()
        do {
            var timings = StageTimings()
            let pixels = try pipeline.pixels(contentsOf: URL(fileURLWithPath: image), timings: &timings)
            try Numpy.write(pixels, shape: [3, pipeline.preprocessor.outputHeight, pipeline.preprocessor.outputWidth],
                            to: URL(fileURLWithPath: output))
        } catch {
            printError("error: \(error)")
            throw ExitCode.failure
        }
    }
}
