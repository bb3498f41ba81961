import Blip2Generation
import Foundation
import Testing

/// The command line reads its generation settings from the library's table: every row is a flag of every
/// generating command, with the row's help, and every flag of those commands is either a row or one of
/// the command's own (image, prompt, output), listed here by hand so that a new generation flag declared
/// outside the table fails this test.
@Suite struct SettingsTableCLITests {
    /// Flags of the generating commands that are not generation settings.
    static let ownFlags: [String: Set<String>] = [
        "caption": ["max-pixels", "prompt", "echo", "threads", "json", "dump-logits", "version", "help"],
        "ask": ["max-pixels", "threads", "json", "dump-logits", "version", "help"],
        "chat": ["max-pixels", "threads", "json", "version", "help"],
    ]

    struct Argument: Decodable {
        struct Name: Decodable { let kind: String; let name: String }
        let kind: String
        let names: [Name]?
        let abstract: String?
    }
    struct Dump: Decodable {
        struct Command: Decodable { let arguments: [Argument]? }
        let command: Command
    }

    @Test(arguments: ["caption", "ask", "chat"])
    func everyGenerationFlagIsARowAndEveryRowAFlag(command: String) throws {
        let result = try blip2.run([command, "--experimental-dump-help"])
        #expect(result.status == 0, "\(result.stderr)")
        let dump = try JSONDecoder().decode(Dump.self, from: Data(result.stdout.utf8))
        var flags: [String: Argument] = [:]
        for argument in dump.command.arguments ?? [] where argument.kind != "positional" {
            for name in argument.names ?? [] where name.kind != "short" { flags[name.name] = argument }
        }
        for row in GenerationSetting.all {
            let long = String(row.flag.dropFirst(2))
            let argument = try #require(flags[long], "\(command) has no \(row.flag)")
            #expect(argument.abstract?.hasPrefix(row.summary) == true, "\(row.flag): \(argument.abstract ?? "")")
            if let short = row.shortFlag {
                #expect(argument.names?.contains { $0.kind == "short" && $0.name == String(short) } == true, "\(row.flag) has no -\(short)")
            }
        }
        let rows = Set(GenerationSetting.all.map { String($0.flag.dropFirst(2)) })
        let others = Set(flags.keys).subtracting(rows)
        #expect(others == Self.ownFlags[command], "\(command): flags outside the table: \(others.sorted())")
    }

    /// A value the table cannot read is refused in the command line's own form, naming flag and value.
    @Test func unreadableValuesNameTheFlag() throws {
        let model = CommandLineConventionTests.demoModel, image = CommandLineConventionTests.demoImage
        let cases: [([String], String)] = [
            (["--beams", "two"], "error: --beams two: it must be an integer"),
            (["--top-p", "half", "--sample"], "error: --top-p half: it must be a number"),
            (["--early-stopping", "sometimes", "--beams", "2"], "error: --early-stopping sometimes: it must be \"true\", \"false\" or \"never\""),
            (["--seed", "-3", "--sample"], "error: --seed -3: it must be an integer from 0 to 18446744073709551615"),
        ]
        for (extra, message) in cases {
            let result = try blip2.run(["caption", model, image] + extra)
            #expect(result.status == 64, "\(extra)")
            #expect(result.stderr.contains(message), "\(extra): \(result.stderr)")
        }
    }
}
