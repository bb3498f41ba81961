import Blip2Core
import ArgumentParser
import Foundation

/// The executables' `main`: the argument parser's own, with its messages in the tools' style
/// (`error:`, not `Error:`), and a mistyped command name answered with the command it most likely meant
/// (`blip2 capton`, `blip2 help bogus`) instead of a bare "unexpected argument" or the main help.
public enum ToolMain {
    public static func run(_ root: any ParsableCommand.Type, arguments: [String] = Array(CommandLine.arguments.dropFirst())) async -> Never {
        do {
            try checkCommandName(root, arguments)
            var command = try root.parseAsRoot(arguments)
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            exit(0)
        } catch {
            let code = root.exitCode(for: error)
            let message = root.fullMessage(for: error)
            if code == .success {
                if !message.isEmpty { print(message) }
            } else if !message.isEmpty {
                printError(lowercasingErrorPrefix(message))
            }
            exit(code.rawValue)
        }
    }

    /// Refuses a first word (or the word after `help`) that names no subcommand, suggesting the nearest.
    static func checkCommandName(_ root: any ParsableCommand.Type, _ arguments: [String]) throws {
        let subcommands = root.configuration.subcommands
        guard !subcommands.isEmpty else { return }
        let names = subcommands.compactMap { $0.configuration.commandName }
        guard var word = arguments.first, !word.hasPrefix("-") else { return }
        if word == "help" {
            guard arguments.count > 1, !arguments[1].hasPrefix("-") else { return }
            word = arguments[1]
        }
        guard !names.contains(word) else { return }
        let tool = root.configuration.commandName ?? "this tool"
        let suggestion = closestName(to: word, among: names).map { "; did you mean '\($0)'?" } ?? ""
        throw ValidationError("'\(word)' is not a \(tool) command\(suggestion) (commands: \(names.joined(separator: ", ")))")
    }
}
