import ArgumentParser
import Blip2CommandLine
import Blip2Core
import Blip2Pipeline
import Foundation

struct PreprocessCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "preprocess",
        abstract: "Write the float32 pixel tensor [3, H, W] the model sees for an image, as .npy.",
        discussion: "Example:\n  blip2 preprocess model.blip2 photo.jpg -o pixels.npy"
    )

    @OptionGroup var modelOptions: ModelOptions

    @Argument(help: "An image file (JPEG or PNG); - reads it from standard input.")
    var image: String

    @Option(name: [.customShort("o"), .long], help: "The .npy file to write.")
    var output: String

    func run() throws {
        do { try checkOutputPath(output, flag: "--output") } catch {
            printError("error: \(error)")
            throw ExitCode.failure
        }
        let pipeline = try modelOptions.load()
        do {
            let pixels = try ImageArgument(argument: image).pixels(with: pipeline)
            try Numpy.write(pixels, shape: [3, pipeline.preprocessor.outputHeight, pipeline.preprocessor.outputWidth],
                            to: URL(fileURLWithPath: output))
        } catch {
            throw failure(error)
        }
    }
}
