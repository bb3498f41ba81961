import ArgumentParser
import Blip2CommandLine
import Blip2Core
import Blip2Image
import Blip2Pipeline
import Foundation

/// Options every command that loads a model shares.
struct ModelOptions: ParsableArguments {
    @Argument(help: "A model file written by blip2-quantize.")
    var model: String

    @Option(name: .customLong("max-pixels"), parsing: .unconditional, help: "Refuse images whose header declares more pixels than this.")
    var maxPixels: Int = ImageDecodeOptions().maxPixels

    func validate() throws {
        guard maxPixels > 0 else { throw ValidationError("--max-pixels must be positive") }
    }

    func load() throws -> Blip2Pipeline {
        var imageOptions = ImageDecodeOptions()
        imageOptions.maxPixels = maxPixels
        do {
            return try Blip2Pipeline(modelPath: model, imageOptions: imageOptions)
        } catch {
            printError("error: \(error)")
            throw ExitCode.failure
        }
    }
}

/// Writes text to standard output immediately (tokens appear as they are produced).
func writeOut(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}

/// Runs one generation for an image file and prints it (streamed text or one JSON line).
func runImageTask(pipeline: Blip2Pipeline, task: Blip2Task, imagePath: String, prompt: String?, question: String? = nil,
                  generation: GenerationOptionsGroup, json: Bool, label: Bool, dumpLogits: String?) throws {
    if let dumpLogits { try checkOutputPath(dumpLogits, flag: "--dump-logits") }
    let image = try pipeline.encodeImage(contentsOf: URL(fileURLWithPath: imagePath))
    let options = generation.options(for: task)
    let streaming = !json && options.numReturnSequences == 1 && options.numBeams == 1
    if streaming, label { writeOut("\(imagePath): ") }
    let result = try pipeline.generate(image: image, prompt: prompt, options: options, onText: streaming ? writeOut : nil)
    if json {
        try printJSON(GenerationRecord(task: task, image: imagePath, prompt: prompt, question: question, result: result))
    } else if streaming {
        writeOut("\n")
    } else {
        for text in result.texts { writeOut((label ? "\(imagePath): " : "") + text + "\n") }
    }
    if let dumpLogits {
        let tokens = result.sequences.first?.tokens ?? []
        let logits = try pipeline.stepLogits(image: image, promptIds: result.promptIds, tokens: tokens)
        try Numpy.write(logits, shape: [tokens.count, pipeline.model.vocabularySize], to: URL(fileURLWithPath: dumpLogits))
    }
}
