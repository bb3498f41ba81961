import ArgumentParser
import Blip2CommandLine
import Blip2Pipeline
import Foundation

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Print the ids the processor builds for a prompt (BOS + prompt ids).",
        discussion: "Example:\n  blip2 tokenize model.blip2 \"Question: what is this? Answer:\" --json"
    )

    @OptionGroup var modelOptions: TokenizerModelOptions

    @Argument(help: "The prompt text.")
    var text: String

    @Flag(name: .long, help: "Print {\"ids\": [...], \"tokens\": [...]} as JSON.")
    var json = false

    struct Output: Encodable {
        let ids: [Int]
        let tokens: [String?]
    }

    func run() throws {
        let tokenizer = try modelOptions.loadTokenizer()
        let ids = Blip2Pipeline.promptIds(text, tokenizer: tokenizer)
        if json {
            try printJSON(Output(ids: ids, tokens: ids.map { tokenizer.token(for: $0) }))
        } else {
            print(ids.map(String.init).joined(separator: " "))
        }
    }
}

struct DetokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "detokenize",
        abstract: "Print the text of token ids (special tokens and ids outside the tokenizer are skipped).",
        discussion: "Example:\n  blip2 detokenize model.blip2 2 102 1345 9"
    )

    @OptionGroup var modelOptions: TokenizerModelOptions

    @Argument(help: "Token ids.")
    var ids: [Int] = []

    func run() throws {
        print(try modelOptions.loadTokenizer().decodeStripped(ids))
    }
}
