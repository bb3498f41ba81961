import ArgumentParser

@main
struct Blip2: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "blip2",
        abstract: "Run BLIP-2 model files on the CPU: caption images, answer questions, inspect files.",
        discussion: "Model files are made from Hugging Face checkpoints by blip2-quantize.",
        subcommands: [CaptionCommand.self, AskCommand.self, ChatCommand.self, PreprocessCommand.self,
                      TokenizeCommand.self, DetokenizeCommand.self, InspectCommand.self, BenchCommand.self, WatchCommand.self]
    )
}
