import ArgumentParser
import Blip2Core

@main
struct Blip2: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "blip2",
        abstract: "Run BLIP-2 model files on the CPU: caption images, answer questions, chat, inspect files.",
        discussion: "Model files are made from Hugging Face checkpoints by blip2-quantize. An image argument of - reads the image from standard input.",
        version: Blip2Version.string,
        subcommands: [CaptionCommand.self, AskCommand.self, ChatCommand.self, PreprocessCommand.self,
                      TokenizeCommand.self, DetokenizeCommand.self, InspectCommand.self, BenchCommand.self, ServeCommand.self,
                      WatchCommand.self, ImatrixCommand.self]
    )
}
