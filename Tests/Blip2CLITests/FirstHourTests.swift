import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// What a new user meets in the first hour: mistyped commands, refused values, token limits, damaged
/// files, help examples, JSON numbers and the wait before the first token.
@Suite struct FirstHourTests {
    static let model = CommandLineConventionTests.demoModel
    static let image = CommandLineConventionTests.demoImage

    @Test func mistypedCommandsAreNamedWithTheNearestOne() throws {
        let cases: [([String], String)] = [
            (["capton"], "error: 'capton' is not a blip2 command; did you mean 'caption'?"),
            (["captoin", Self.model], "error: 'captoin' is not a blip2 command; did you mean 'caption'?"),
            (["serv"], "did you mean 'serve'?"),
            (["help", "bogus"], "error: 'bogus' is not a blip2 command (commands: caption, ask, chat,"),
            (["help", "wach"], "did you mean 'watch'?"),
        ]
        for (args, needle) in cases {
            let result = try blip2.run(args)
            #expect(result.status == 64, "\(args)")
            #expect(result.stderr.contains(needle), "\(args): \(result.stderr)")
            #expect(result.stdout.isEmpty, "\(args): no help on standard output")
        }
        #expect(!(try blip2.run(["zzzzzz"])).stderr.contains("did you mean"), "nothing is near")
        let help = try blip2.run(["help", "caption"])
        #expect(help.status == 0 && help.stdout.contains("OVERVIEW: Caption images"), "\(help.stderr)")
    }

    /// Every refused value reads `error: FLAG VALUE: it must be ...`, whichever command refuses it.
    @Test func refusedValuesNameFlagValueAndRange() throws {
        let (model, image) = (Self.model, Self.image)
        let cases: [([String], String)] = [
            (["caption", model, image, "-t", "0"], "--threads 0: it must be at least 1"),
            (["caption", model, image, "--beams", "0"], "--beams 0: it must be at least 1"),
            (["caption", model, image, "--max-pixels", "0"], "--max-pixels 0: it must be at least 1"),
            (["serve", model, "--threads", "0"], "--threads 0: it must be at least 1"),
            (["serve", model, "-t", "0"], "--threads 0: it must be at least 1"),
            (["serve", model, "--port", "70000"], "--port 70000: it must be between 0 and 65535"),
            (["serve", model, "--queue", "-1"], "--queue -1: it must be 0 or more"),
            (["serve", model, "--session-ttl", "0"], "--session-ttl 0: it must be a positive number of seconds"),
            (["serve", model, "--max-body-mb", "5000"], "--max-body-mb 5000: it must be between 1 and 4096"),
            (["watch", model, "-", "--min-change", "2"], "--min-change 2: it must be between 0 and 1"),
            (["watch", model, "-", "--min-change", "0.5", "--every=-1"], "--every -1: it must be 0 or more seconds"),
            (["watch", model, "-", "--max-frames", "0"], "--max-frames 0: it must be at least 1"),
            (["bench", model, "--runs", "0"], "--runs 0: it must be at least 1"),
            (["detokenize", model, "4", "-5"], "token id -5: it must be 0 or more"),
        ]
        for (args, message) in cases {
            let result = try blip2.run(args)
            #expect(result.status == 64, "\(args): \(result.stderr)")
            #expect(result.stderr.hasPrefix("error: \(message)\n"), "\(args): \(result.stderr)")
            #expect(result.stdout.isEmpty)
        }
        // The converter's own values, in the same form (checked before the checkpoint is read).
        let converter: [([String], String)] = [
            (["--zstd-level", "99"], "--zstd-level 99: it must be from 1 to 22"),
            (["--threads", "0"], "--threads 0: it must be at least 1"),
            (["--weights", "q5"], "--weights q5: it must be f32, f16, q8, q4, mixed, q4k, q3k, q6k or q4k-m"),
            (["--compress", "gzip"], "--compress gzip: it must be none or zstd"),
            (["--override", "foo"], "--override foo: it must be GLOB=TYPE, e.g. 'language_model.*.fc2.weight=q8'"),
            (["--override", "a=zz"], "--override a=zz: it must end in a type: f32, f16, q8, q4, q8p, q4p, q4k, q3k, q6k"),
        ]
        for (args, message) in converter {
            let result = try quantize.run(["checkpoint", "-o", "out.blip2"] + args)
            #expect(result.status == 64, "\(args): \(result.stderr)")
            #expect(result.stderr.hasPrefix("error: \(message)\n"), "\(args): \(result.stderr)")
        }
        for result in [try blip2.run(["caption", model]), try blip2.run(["caption", model, image, "--bogus"]),
                       try quantize.run(["checkpoint", "-o", "out.blip2", "--zstd-level", "0"])] {
            #expect(result.status == 64)
            #expect(result.stderr.hasPrefix("error: "), "the parser's own messages too: \(result.stderr)")
        }
    }

    /// The context is 512 tokens; the demo model's image takes num_query_tokens of them, the prompt the rest.
    @Test func oneTokenLimitSaysHowManyNewTokensFit() throws {
        let inspect = try blip2.run(["inspect", Self.model, "--json"])
        let config = (try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as! [String: Any])["config"] as! [String: Any]
        let imageTokens = config["num_query_tokens"] as! Int
        let question = "what color is the cross?"
        let questionTokens = try blip2.run(["tokenize", Self.model, "Question: \(question) Answer:"]).stdout.split(separator: " ").count
        let cases: [([String], Int, String)] = [
            (["caption", Self.model, Self.image, "-n", "600"], 1, "600"),
            (["caption", Self.model, Self.image, "-n", "100000"], 1, "100000"),
            (["ask", Self.model, Self.image, question, "-n", "600"], questionTokens, "600"),
        ]
        for (args, promptTokens, given) in cases {
            let result = try blip2.run(args)
            let fit = 512 - imageTokens - promptTokens
            #expect(result.status == 64, "\(args): \(result.stderr)")
            #expect(result.stderr == "error: --max-new-tokens \(given): it must be at most \(fit): after the \(promptTokens)-token prompt and \(imageTokens) image embeddings, \(fit) new tokens fit the 512-token context\n",
                    "\(args): \(result.stderr)")
            #expect(result.stdout.isEmpty)
        }
        let largest = try blip2.run(["caption", Self.model, Self.image, "-n", "\(512 - imageTokens - 1)"])
        #expect(largest.status == 0, "the limit itself fits: \(largest.stderr)")

        let beyond = try blip2.run(["caption", Self.model, Self.image, "-n", "3", "--min-new-tokens", "5"])
        #expect(beyond.status == 0)
        #expect(beyond.stderr == "warning: --min-new-tokens 5 is above --max-new-tokens 3: generation still stops after 3 tokens\n", "\(beyond.stderr)")
        let beyondDefault = try blip2.run(["ask", Self.model, Self.image, question, "--min-new-tokens", "12"])
        #expect(beyondDefault.stderr.contains("warning: --min-new-tokens 12 is above the default --max-new-tokens here (10)"), "\(beyondDefault.stderr)")
    }

    /// Weights that decode to NaN are a damaged file: the message points to the check that finds it.
    @Test func nonFiniteWeightsPointToInspectVerify() throws {
        let scratch = Scratch()
        let damaged = scratch.path("damaged.blip2")
        try FileManager.default.copyItem(atPath: Self.model, toPath: damaged)
        let inspect = try blip2.run(["inspect", Self.model, "--json"])
        let tensors = (try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as! [String: Any])["tensors"] as! [[String: Any]]
        let bias = tensors.first { $0["name"] as? String == "language_projection.bias" }!
        #expect(bias["type"] as? String == "f32" && bias["compression"] as? String == "none")
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: damaged))
        try handle.seek(toOffset: UInt64(bias["offset"] as! Int))
        let nan: [UInt8] = [0x00, 0x00, 0xC0, 0x7F]   // a quiet NaN, little-endian f32
        try handle.write(contentsOf: Data((0..<16).flatMap { _ in nan }))
        try handle.close()

        let caption = try blip2.run(["caption", damaged, Self.image])
        #expect(caption.status == 1)
        #expect(caption.stderr.contains("`blip2 inspect MODEL --verify`"), "\(caption.stderr)")
        #expect(!caption.stderr.contains("higher-precision"))
        let verify = try blip2.run(["inspect", damaged, "--verify"])
        #expect(verify.status != 0 && (verify.stdout + verify.stderr).contains("language_projection.bias"), "\(verify.stdout)\(verify.stderr)")
    }

    @Test func detokenizeNeedsIdsAndItsExampleDecodesToWords() throws {
        let none = try blip2.run(["detokenize", Self.model])
        #expect(none.status == 64 && none.stderr.hasPrefix("error: give at least one token id"), "\(none.stderr)")
        let help = try blip2.run(["detokenize", "--help"]).stdout
        let example = try #require(help.split(separator: "\n").first { $0.hasPrefix("  blip2 detokenize ") })
        let words = example.split(separator: " ").dropFirst(2)
        #expect(words.first == "Models/demo-q8.blip2", "the example runs on the bundled model: \(example)")
        let ids = words.dropFirst().map(String.init)
        let decoded = try blip2.run(["detokenize", Self.model] + ids)
        #expect(decoded.status == 0 && decoded.stdout == "a small red square\n", "\(decoded.stdout)")
        #expect(help.contains("\"a small red square\""), "the help says what it prints")
        // And they are the ids the tokenizer gives that text.
        #expect(try blip2.run(["tokenize", Self.model, "a small red square"]).stdout == ids.joined(separator: " ") + "\n")
    }

    @Test func serveHelpShowsNoMachineDefaultsAndUnits() throws {
        let help = try blip2.run(["serve", "--help"]).stdout
        #expect(help.contains("-t, --threads <threads>"), "\(help)")
        let threads = help.components(separatedBy: "--threads").dropFirst().first?.components(separatedBy: "\n  -").first ?? ""
        #expect(threads.contains("one per core") && !threads.contains("(default: \(ProcessInfo.processInfo.activeProcessorCount))"), "\(threads)")
        #expect(help.contains("--session-ttl <seconds>"))
    }

    /// Examples are one command per line, or continued with a backslash onto an indented line, and fit
    /// the 80 columns the help is wrapped to (so the parser never breaks one mid-command).
    @Test func helpExamplesCanBeCopiedAndPasted() throws {
        let commands = ["caption", "ask", "chat", "preprocess", "tokenize", "detokenize", "inspect", "bench", "serve", "watch"]
        for (tool, args) in [(quantize, ["--help"])] + commands.map({ (blip2, [$0, "--help"]) }) {
            let overview = try tool.run(args).stdout.components(separatedBy: "USAGE:")[0]
            let paragraphs = overview.components(separatedBy: "\n\n").filter { $0.hasPrefix("Example") }
            #expect(!paragraphs.isEmpty, "\(args) has examples")
            for paragraph in paragraphs {
                let lines = paragraph.split(separator: "\n").dropFirst()
                var continued = false
                for line in lines {
                    #expect(line.hasPrefix(continued ? "    " : "  "), "\(args): '\(line)' is not a command or its continuation")
                    #expect(line.count <= 80, "\(args): '\(line)'")
                    continued = line.hasSuffix("\\")
                }
                #expect(!continued, "\(args): the last example ends in a backslash")
            }
        }
        let kernelBench = try Executable(name: "blip2-kernel-bench").run(["--help"], timeout: hangGuard).stdout
        let usage = kernelBench.components(separatedBy: "\n\n")[0]
        let listed = Set(kernelBench.matches(of: #/\n  (--[a-z-]+)/#).map { String($0.1) })
        #expect(listed.count >= 8)
        for flag in listed { #expect(usage.contains("[\(flag)"), "the usage line names \(flag)") }
    }

    @Test func jsonTimingsAreRoundedToTheMicrosecond() throws {
        let result = try blip2.run(["caption", Self.model, Self.image, "--json"])
        #expect(result.status == 0)
        let timings = try #require(result.stdout.firstMatch(of: #/"timings_ms":\{([^}]*)\}/#)).1
        let numbers = timings.matches(of: #/:(-?[0-9.eE+-]+)/#).map { String($0.1) }
        #expect(numbers.count >= 6, "\(timings)")
        for number in numbers {
            let decimals = number.split(separator: ".").dropFirst().first?.count ?? 0
            #expect(decimals <= 3 && !number.contains("e"), "\(number) in \(timings)")
        }
    }

    /// A port in use or a host that is not this machine's: the cause and the flag to change, not a system call.
    @Test func serveCannotBindInTheOneStyle() throws {
        // A listening socket of the test's own holds a port.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && listen(fd, 1) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        try #require(bound)
        let port = Int(UInt16(bigEndian: address.sin_port))
        let cases: [([String], String)] = [
            (["--port", "\(port)"], "error: cannot serve on 127.0.0.1:\(port): address already in use (try another --port, or --port 0 for any free one)\n"),
            (["--host", "nonsense.invalid", "--port", "0"],
             "error: cannot serve on nonsense.invalid:0: cannot resolve the host name 'nonsense.invalid' (check --host; 0.0.0.0 listens on every interface)\n"),
        ]
        for (args, message) in cases {
            let result = try blip2.run(["serve", Self.model] + args, timeout: hangGuard)
            #expect(result.status == 1, "\(args): \(result.stderr)")
            #expect(result.stderr.hasSuffix(message), "\(args): \(result.stderr)")
            #expect(!result.stdout.contains("http://"))
        }
    }

    /// One answer line per question line, a blank line for a blank one, so answers pair with questions.
    @Test func pipedChatAnswersEveryLine() throws {
        let input = Data("what color is the cross?\n\nhow many red objects are there?\n".utf8)
        let text = try blip2.run(["chat", Self.model, Self.image], input: input)
        #expect(text.status == 0, "\(text.stderr)")
        let lines = text.stdout.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        #expect(lines.count == 3 && lines[1].isEmpty && !lines[0].isEmpty && !lines[2].isEmpty, "\(text.stdout)")
        let json = try blip2.run(["chat", Self.model, Self.image, "--json"], input: input)
        let records = json.stdout.split(separator: "\n").map { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(records.count == 3 && records[1]?["question"] as? String == "" && records[1]?["text"] as? String == "", "\(json.stdout)")
    }

    /// On a terminal, standard error says what runs before the first token, and erases it before the text.
    @Test func aStageLineShowsOnATerminalUntilTheTextStarts() throws {
        let terminal = try PseudoTerminal()
        let caption = Process()
        caption.executableURL = blip2.url
        caption.arguments = ["caption", Self.model, Self.image]
        caption.environment = ["TERM": "xterm", "PATH": "/usr/bin:/bin"]
        let output = Pipe()
        caption.standardError = terminal.terminal
        caption.standardOutput = output
        caption.standardInput = FileHandle.nullDevice
        let text = PipeCollector(output)
        try caption.run()
        caption.waitUntilExit()
        #expect(caption.terminationStatus == 0)
        #expect(wait(seconds: 120) { terminal.text.hasSuffix("\r\u{1B}[K") }, "the line is erased: \(terminal.text.debugDescription)")
        let shown = terminal.text
        #expect(shown.contains("(encoding the image...)") && shown.contains("(reading the prompt...)"), "\(shown.debugDescription)")
        #expect(shown.range(of: "encoding")!.lowerBound < shown.range(of: "reading")!.lowerBound)
        let plain = try blip2.run(["caption", Self.model, Self.image])
        #expect(plain.stderr.isEmpty, "no stage line off a terminal")
        #expect(wait(seconds: 120) { text.text == plain.stdout }, "\(text.text)")
    }
}
