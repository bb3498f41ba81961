import Foundation
import Testing

/// The command line as its users meet it: versions, messages in flag names, warnings, standard input,
/// paths as given, help texts, summaries and bench sweeps.
@Suite struct CommandLineConventionTests {
    static let demoModel = packageRoot.appendingPathComponent("Models/demo-q8.blip2").path
    static let demoImage = packageRoot.appendingPathComponent("Models/examples/row-42-16.png").path

    @Test func versionIsTheOneRecordedInModelFiles() throws {
        let scratch = Scratch()
        let tool = try blip2.run(["--version"])
        #expect(tool.status == 0)
        #expect(try quantize.run(["--version"]).stdout == tool.stdout)
        let version = tool.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(version.split(separator: ".").count == 3, "a semantic version: \(version)")

        let model = try RuntimeCommandTests.model(scratch)
        let inspect = try blip2.run(["inspect", model, "--json"])
        let object = try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as! [String: Any]
        #expect((object["quantization"] as? [String: Any])?["tool_version"] as? String == version)
        let bench = try blip2.run(["bench", model, "--runs", "1", "-n", "2", "--bandwidth-buffer", "8", "--json"])
        #expect(bench.status == 0, "\(bench.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(bench.stdout.utf8)) as? [String: Any]
        #expect(report?["version"] as? String == version)
        // Every stage's profile, decoding's included: it runs products (the layers and the output head).
        let profile = report?["profile"] as? [String: [String: Double]] ?? [:]
        for stage in ["vision", "qformer_projection", "prefill", "decode"] {
            let products = profile[stage]?["products_ms"] ?? 0, operations = profile[stage]?["gops"] ?? 0
            #expect(products > 0 && operations > 0, "\(stage): \(String(describing: profile[stage]))")
            // The image and query stages' attention is split into its two products and the rest; the causal
            // stages' is not.
            let attention = profile[stage]?["attention_ms"] ?? -1, attentionProducts = profile[stage]?["attention_products_ms"] ?? -1
            if stage == "vision" || stage == "qformer_projection" {
                #expect(attentionProducts > 0 && attentionProducts < attention, "\(stage): \(String(describing: profile[stage]))")
            } else {
                #expect(attentionProducts == 0 && attention > 0, "\(stage): \(String(describing: profile[stage]))")
            }
        }
    }

    /// Swift names of settings must never reach a user: they type flags.
    static let internalNames = ["numReturnSequences", "doSample", "numBeams", "maxNewTokens", "topP", "topK", "ImageDecodeOptions",
                                "maxPixels", "temperature =", "repetitionPenalty", "lengthPenalty"]

    @Test func errorsSpeakInFlagNames() throws {
        let (model, image) = (Self.demoModel, Self.demoImage)
        let cases: [([String], Int32, [String])] = [
            (["caption", model, image, "--num-return-sequences", "3"], 64, ["--num-return-sequences 3", "--beams", "--sample"]),
            (["caption", model, image, "--sample", "--temperature", "0"], 64, ["--temperature", "--sample"]),
            (["caption", model, image, "--max-pixels", "1000"], 1, ["--max-pixels", "row-42-16.png"]),
            (["caption", model, image, "--top-p", "1.5"], 64, ["--top-p 1.5", "(0, 1]"]),
            (["caption", model, image, "--top-p", "1.5", "--sample"], 64, ["--top-p 1.5"]),
            (["caption", model, image, "--top-k=-1"], 64, ["--top-k -1"]),
            (["caption", model, image, "--temperature=-2"], 64, ["--temperature -2"]),
            (["caption", model, image, "-n", "0"], 64, ["--max-new-tokens 0"]),
            (["caption", model, image, "--beams", "0"], 64, ["--beams 0"]),
            (["caption", model, image, "--beams", "2", "--num-return-sequences", "3"], 64, ["--num-return-sequences 3", "--beams (2)"]),
            (["caption", model, image, "--repetition-penalty", "0"], 64, ["--repetition-penalty 0"]),
            (["caption", model, image, "-t", "0"], 64, ["--threads"]),
            (["chat", model, image, "--num-return-sequences", "3", "--sample"], 64, ["--num-return-sequences"]),
            (["ask", model, image, ""], 64, ["question is empty"]),
            (["ask", model, image, "  "], 64, ["question is empty"]),
            (["caption", model, image, "--early-stopping", "sometimes"], 64, ["--early-stopping"]),
        ]
        for (args, status, needles) in cases {
            let result = try blip2.run(args)
            #expect(result.status == status, "\(args.dropFirst(3)): \(result.stderr)")
            for needle in needles { #expect(result.stderr.contains(needle), "\(args.dropFirst(3)): \(result.stderr)") }
            for name in Self.internalNames { #expect(!result.stderr.contains(name), "\(args.dropFirst(3)) says \(name): \(result.stderr)") }
            #expect(result.stdout.isEmpty)
        }
    }

    @Test func optionsWithoutEffectAreWarnedAbout() throws {
        let (model, image) = (Self.demoModel, Self.demoImage)
        let plain = try blip2.run(["caption", model, image])
        #expect(plain.status == 0 && plain.stderr.isEmpty, "\(plain.stderr)")
        let cases: [([String], String?)] = [
            (["--temperature", "0.5"], "--temperature has no effect without --sample"),
            (["--top-k", "5", "--top-p", "0.9"], "--top-k, --top-p have no effect without --sample"),
            (["--seed", "7"], "--seed has no effect without --sample"),
            (["--length-penalty", "2"], "--length-penalty has no effect without --beams above 1"),
            (["--temperature", "0"], nil),   // how other tools ask for greedy decoding, which this is
        ]
        for (extra, warning) in cases {
            let result = try blip2.run(["caption", model, image] + extra)
            #expect(result.status == 0, "\(extra): \(result.stderr)")
            #expect(result.stdout == plain.stdout, "\(extra): greedy decoding is unchanged")
            if let warning {
                #expect(result.stderr.contains("warning: \(warning)"), "\(extra): \(result.stderr)")
            } else {
                #expect(result.stderr.isEmpty, "\(extra): \(result.stderr)")
            }
        }
        let sampled = try blip2.run(["caption", model, image, "--sample", "--temperature", "0.5", "--top-k", "5", "--seed", "3"])
        #expect(sampled.status == 0 && sampled.stderr.isEmpty, "\(sampled.stderr)")
        let echo = try blip2.run(["caption", model, image, "--echo"])
        #expect(echo.stderr.contains("warning: --echo has no effect without --prompt"))
    }

    @Test func dashReadsTheImageFromStandardInput() throws {
        let scratch = Scratch()
        let (model, image) = (Self.demoModel, Self.demoImage)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: image))
        let fromFile = try blip2.run(["caption", model, image, "--json"])
        let fromInput = try blip2.run(["caption", model, "-", "--json"], input: bytes)
        #expect(fromInput.status == 0, "\(fromInput.stderr)")
        let a = try JSONSerialization.jsonObject(with: Data(fromFile.stdout.utf8)) as! [String: Any]
        let b = try JSONSerialization.jsonObject(with: Data(fromInput.stdout.utf8)) as! [String: Any]
        #expect(b["token_ids"] as? [Int] == a["token_ids"] as? [Int])
        #expect(b["image"] as? String == "-")

        let answer = try blip2.run(["ask", model, "-", "what color is the cross?"], input: bytes)
        #expect(answer.stdout == (try blip2.run(["ask", model, image, "what color is the cross?"])).stdout)

        let pixels = (scratch.path("file.npy"), scratch.path("stdin.npy"))
        #expect(try blip2.run(["preprocess", model, image, "-o", pixels.0]).status == 0)
        #expect(try blip2.run(["preprocess", model, "-", "-o", pixels.1], input: bytes).status == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: pixels.0)) == Data(contentsOf: URL(fileURLWithPath: pixels.1)))

        let garbage = try blip2.run(["caption", model, "-"], input: Data("not an image".utf8))
        #expect(garbage.status == 1)
        #expect(garbage.stderr.contains("standard input: not a JPEG or PNG image"), "\(garbage.stderr)")
        let empty = try blip2.run(["caption", model, "-"])
        #expect(empty.status == 1 && empty.stderr.contains("standard input"), "\(empty.stderr)")
        #expect(try blip2.run(["caption", model, "-", "-"], input: bytes).status == 64)
        #expect(try blip2.run(["chat", model, "-"], input: bytes).status == 64)
    }

    @Test func messagesShowPathsAsGiven() throws {
        let scratch = Scratch()
        try FileManager.default.createDirectory(atPath: scratch.path("pictures"), withIntermediateDirectories: true)
        try Data("broken".utf8).write(to: URL(fileURLWithPath: scratch.path("pictures/broken.png")))
        try FileManager.default.copyItem(atPath: Self.demoModel, toPath: scratch.path("demo.blip2"))
        for (args, needle) in [(["caption", "demo.blip2", "pictures/missing.png"], "pictures/missing.png: "),
                               (["caption", "demo.blip2", "pictures/broken.png"], "pictures/broken.png: "),
                               (["caption", "pictures/broken.png", "pictures/broken.png"], "pictures/broken.png: "),
                               (["inspect", "pictures/../missing.blip2"], "pictures/../missing.blip2: ")] {
            let result = try blip2.run(args, in: scratch.url)
            #expect(result.status == 1, "\(args)")
            #expect(result.stderr.contains(needle), "\(args): \(result.stderr)")
            #expect(!result.stderr.contains(scratch.url.path), "\(args): \(result.stderr)")
        }
        let checkpoint = fixtureModels.appendingPathComponent("base-f32/checkpoint").path
        let converted = try quantize.run([checkpoint, "-o", "out.blip2", "--weights", "f32"], in: scratch.url)
        #expect(converted.stdout.contains("wrote out.blip2:"), "\(converted.stdout)")
    }

    @Test func echoPrintsThePromptWithItsContinuation() throws {
        let scratch = Scratch()
        let model = try RuntimeCommandTests.model(scratch)
        let image = RuntimeCommandTests.image
        let reference = try RuntimeCommandTests.reference().tasks["prompted"]!
        // transformers' decode of the whole sequence (prompt and new tokens), special tokens skipped.
        let greedy = reference.generations.first { $0.name == "greedy" }!
        let streamed = try blip2.run(["caption", model, image, "-p", reference.prompt!, "--echo"])
        #expect(streamed.status == 0, "\(streamed.stderr)")
        #expect(streamed.stdout == greedy.walkthrough_decode[0] + "\n")
        let beams = reference.generations.first { $0.name == "beam3_return2_early" }!
        let ranked = try blip2.run(["caption", model, image, "-p", reference.prompt!, "--echo", "--beams", "3",
                                    "--num-return-sequences", "2", "--early-stopping", "true"])
        #expect(ranked.stdout == beams.walkthrough_decode.map { $0 + "\n" }.joined())
        let plain = try blip2.run(["caption", model, image, "-p", reference.prompt!])
        #expect(plain.stdout == greedy.text[0] + "\n")
    }

    @Test func helpTextsAreTidy() throws {
        let commands = ["caption", "ask", "chat", "preprocess", "tokenize", "detokenize", "inspect", "bench"]
        for (tool, args) in [(quantize, ["--help"]), (blip2, ["--help"])] + commands.map({ (blip2, [$0, "--help"]) }) {
            let help = try tool.run(args)
            #expect(help.status == 0, "\(args)")
            #expect(help.stdout.range(of: #"\(default: [^)]*\)\.? \(default:"#, options: .regularExpression) == nil, "doubled default in \(args)")
            // The parser wraps prose to lines under 80 columns; a line that the next line's first word would still have
            // fitted on ends in a hard break written into the source.
            let overview = help.stdout.components(separatedBy: "USAGE:")[0]
            for paragraph in overview.components(separatedBy: "\n\n") where !paragraph.hasPrefix("Examples:") && !paragraph.hasPrefix("Example:") {
                let lines = paragraph.split(separator: "\n")
                for (line, next) in zip(lines, lines.dropFirst()) {
                    let word = next.split(separator: " ").first ?? ""
                    #expect(line.count + 1 + word.count >= 80, "hard line break in \(args): '\(line)' / '\(next)'")
                }
            }
            for example in overview.split(separator: "\n") where example.hasPrefix("  ") {
                #expect(example.count <= 80, "example wider than the help: \(example)")
            }
        }
        for command in ["tokenize", "detokenize"] {
            #expect(!(try blip2.run([command, "--help"])).stdout.contains("--max-pixels"), "\(command) decodes no image")
        }
        let caption = try blip2.run(["caption", "--help"]).stdout
        for flag in ["-p, --prompt", "-n, --max-new-tokens", "-t, --threads"] { #expect(caption.contains(flag), "\(flag)") }
        #expect(try quantize.run(["--help"]).stdout.contains("1 (fast) to 22"))

        let completion = try quantize.run(["--generate-completion-script", "bash"])
        #expect(completion.status == 0)
        for (flag, values) in [("--weights", ["f32", "f16", "q8", "q4", "mixed"]), ("--compress", ["none", "zstd"])] {
            let offered = completion.stdout.components(separatedBy: "'\(flag)')").dropFirst().first?.components(separatedBy: "return").first ?? ""
            for value in values { #expect(offered.contains("'\(value)'"), "\(flag) completes \(value)") }
        }
        #expect(try blip2.run(["--generate-completion-script", "zsh"]).stdout.contains("caption"))
    }

    @Test func inspectAndConvertPrintASummaryAndTheTableOnRequest() throws {
        let scratch = Scratch()
        let output = scratch.path("q4.blip2")
        let checkpoint = fixtureModels.appendingPathComponent("base-f32/checkpoint").path
        let converted = try quantize.run([checkpoint, "-o", output, "--weights", "q4"])
        #expect(converted.status == 0, "\(converted.stderr)")
        let json = try blip2.run(["inspect", output, "--json"])
        let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as! [String: Any]
        let tensors = object["tensors"] as! [[String: Any]]
        // Expected totals recomputed here from the per-tensor rows.
        var typeCounts: [String: Int] = [:], storedByType: [String: Int] = [:]
        for tensor in tensors {
            typeCounts[tensor["type"] as! String, default: 0] += 1
            storedByType[tensor["type"] as! String, default: 0] += tensor["stored_bytes"] as! Int
        }
        let byType = object["totals_by_type"] as! [String: [String: Any]]
        for (type, count) in typeCounts {
            #expect(byType[type]?["tensors"] as? Int == count, "\(type)")
            #expect(byType[type]?["stored_bytes"] as? Int == storedByType[type], "\(type)")
        }
        #expect((object["quantization"] as? [String: Any])?["tensors"].map { ($0 as! [String: Any]).count } == tensors.count,
                "the stored quantization section lists every tensor")
        let worst = tensors.max { ($0["error"] as? Double ?? 0) < ($1["error"] as? Double ?? 0) }!

        for text in [converted.stdout, try blip2.run(["inspect", output]).stdout] {
            #expect(text.contains("component"))
            #expect(text.range(of: #"\nq4p +\#(typeCounts["q4p"] ?? -1) "#, options: .regularExpression) != nil, "q4p row: \(text)")
            #expect(text.contains(worst["name"] as! String), "the worst tensor is named")
            #expect(text.components(separatedBy: "\n").count < tensors.count, "a summary, not the table")
        }
        for text in [try quantize.run([checkpoint, "-o", output, "--weights", "q4", "--tensors"]).stdout,
                     try blip2.run(["inspect", output, "--tensors"]).stdout] {
            for tensor in tensors { #expect(text.contains(tensor["name"] as! String)) }
        }
    }

    @Test func benchSweepsModelsAndThreadsIntoOneTable() throws {
        let scratch = Scratch()
        let second = scratch.path("copy.blip2")
        try FileManager.default.copyItem(atPath: Self.demoModel, toPath: second)
        let args = ["bench", Self.demoModel, second, "-t", "1,2", "--runs", "1", "-n", "3", "--bandwidth-buffer", "8"]
        // A 48 MB bandwidth buffer: each peak RSS must leave out the buffers of the measurements before it.
        let json = try blip2.run(Array(args.dropLast(2)) + ["--bandwidth-buffer", "48", "--json"])
        #expect(json.status == 0, "\(json.stderr)")
        let records = try json.stdout.split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        #expect(records.map { $0["threads"] as? Int } == [1, 2, 1, 2])
        let peaks = records.map { $0["peak_rss_bytes"] as? Int ?? .max }
        for peak in peaks.dropFirst() { #expect(peak < peaks[0] + 24 << 20, "peak RSS \(peaks): an earlier bandwidth buffer counted") }
        #expect(records.map { ($0["model"] as? [String: Any])?["path"] as? String } == [Self.demoModel, Self.demoModel, second, second])
        for step in ["loading", "warm-up", "run 1/1", "measuring read bandwidth"] {
            #expect(json.stderr.components(separatedBy: "\n").filter { $0.hasSuffix(": \(step)") }.count == 4, "progress '\(step)': \(json.stderr)")
        }

        let markdown = scratch.path("bench.md")
        let table = try blip2.run(args + ["--markdown", markdown])
        #expect(table.status == 0, "\(table.stderr)")
        let rows = table.stdout.split(separator: "\n").filter { $0.hasPrefix("| ") }
        #expect(rows.count == 2 + 4, "header, rule and one row per model and thread count: \(table.stdout)")
        #expect(try String(contentsOfFile: markdown, encoding: .utf8) == table.stdout)
        // The demo model decodes a token in about a millisecond: its time needs three significant digits.
        let header = rows[0].split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
        let column = header.firstIndex(of: "ms / token")!
        for row in rows.dropFirst(2) {
            let cell = row.split(separator: "|", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }[column + 1]
            let digits = cell.filter(\.isNumber).drop { $0 == "0" }
            #expect(digits.count >= 3, "ms per token '\(cell)'")
        }
        #expect(try blip2.run(["bench", Self.demoModel, "-t", "1,0"]).status == 64)
    }

    @Test func kernelBenchPrintsHelp() throws {
        let tool = Executable(name: "blip2-kernel-bench")
        let help = try tool.run(["--help"], timeout: hangGuard)
        #expect(help.status == 0)
        #expect(help.stdout.contains("USAGE: blip2-kernel-bench"))
        let typo = try tool.run(["--thread", "2"], timeout: hangGuard)
        #expect(typo.status == 64 && typo.stderr.contains("'--thread'"))
    }
}
