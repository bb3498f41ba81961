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
        let ids = Pipeline.promptIds(text, tokenizer: tokenizer)
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
        discussion: """
        Example:
          blip2 detokenize Models/demo-q8.blip2 2 68 312 362 342

        The example prints "a small red square": the bundled demo model's ids for it (blip2 tokenize gives a text's ids).
        """
    )

    @OptionGroup var modelOptions: TokenizerModelOptions

    // All unrecognized arguments, so a negative id reaches validate() as a number, not as an unknown option.
    @Argument(parsing: .allUnrecognized, help: "Token ids (at least one).")
    var ids: [Int] = []

    func validate() throws {
        guard !ids.isEmpty else { throw ValidationError("give at least one token id (blip2 tokenize prints a prompt's ids)") }
        if let negative = ids.first(where: { $0 < 0 }) { throw invalidValue("token id", negative, mustBe: "0 or more") }
    }

    func run() throws {
        print(try modelOptions.loadTokenizer().decodeStripped(ids))
    }
}
