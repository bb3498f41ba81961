import Foundation
import Testing
@testable import Blip2ModelFile

/// `blip2 imatrix`: the file it writes, its summary, its prompts, and its refusals.
@Suite struct ImatrixCLITests {
    struct Reference: Decodable {
        struct Entry: Decodable { let tokens: Int; let values: [Double] }
        let images: [String]
        let entries: [String: Entry]
    }

    /// The images of Tests/Fixtures/imatrix/base-f32.json (Tools/make_imatrix_reference.py) give its
    /// statistics: the same weights, token counts, and every column within float error.
    @Test func writesTheMatrixTransformersGives() throws {
        let scratch = Scratch()
        let model = try RuntimeCommandTests.model(scratch)
        let reference = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: packageRoot.appendingPathComponent("Tests/Fixtures/imatrix/base-f32.json")))
        let images = reference.images.map { fixtureModels.appendingPathComponent("images/\($0)").path }
        let output = scratch.path("base.imatrix")
        let result = try blip2.run(["imatrix", model] + images + ["--output", output, "--json", "--threads", "1"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("[2/2]") && result.stderr.contains("wrote \(output): 37 matrices"), "progress: \(result.stderr)")

        let matrix = try ImportanceMatrix(contentsOf: output)
        #expect(Set(matrix.entries.keys) == Set(reference.entries.keys))
        for (name, theirs) in reference.entries {
            let ours = try #require(matrix.entries[name])
            #expect(ours.tokens == theirs.tokens, "\(name)")
            let scale = theirs.values.max() ?? 0
            let worst = zip(ours.values, theirs.values).map { abs(Double($0) - $1) / max($1, 1e-6 * scale, 1e-30) }.max() ?? 1
            #expect(worst < 2e-4, "\(name): \(worst)")
        }
        #expect(matrix.source.model == "base-f32.blip2" && matrix.source.images == 2)
        #expect(matrix.source.prompts.count == 5 && matrix.source.prompts[0] == "" && matrix.source.prompts[1] == "Question: What is in the picture? Answer:")
        // Its names and column counts are the model file's.
        let file = try ModelFile(path: model, options: .init(decompressAtOpen: false))
        try matrix.check(against: file.tensors.filter { $0.shape.count == 2 }.map { ($0.name, $0.shape[1]) }, file: output)

        let summary = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        #expect(summary["matrices"] as? Int == 37 && summary["images"] as? Int == 2 && summary["output"] as? String == output)
        #expect(summary["bytes"] as? Int == (try FileManager.default.attributesOfItem(atPath: output)[.size] as? Int))
        #expect((summary["runs"] as? [[String: Any]])?.count == 10)
    }

    @Test func questionsReplaceTheDefaults() throws {
        let scratch = Scratch()
        let model = try RuntimeCommandTests.model(scratch)
        try "What is it?\n\n  Is it round?  \n".write(toFile: scratch.path("questions.txt"), atomically: true, encoding: .utf8)
        let output = scratch.path("q.imatrix")
        let result = try blip2.run(["imatrix", model, RuntimeCommandTests.image, "-o", output, "--question", "Why?",
                                    "--questions-file", scratch.path("questions.txt")])
        #expect(result.status == 0, "\(result.stderr)")
        let matrix = try ImportanceMatrix(contentsOf: output)
        #expect(matrix.source.prompts == ["", "Question: Why? Answer:", "Question: What is it? Answer:", "Question: Is it round? Answer:"])
    }

    @Test func badInputsAreRefusedWithoutWritingAnything() throws {
        let scratch = Scratch()
        let model = try RuntimeCommandTests.model(scratch)
        let output = scratch.path("out.imatrix")
        try Data("not an image".utf8).write(to: URL(fileURLWithPath: scratch.path("bad.png")))
        try Data().write(to: URL(fileURLWithPath: scratch.path("empty.txt")))
        let image = RuntimeCommandTests.image
        let cases: [([String], String)] = [
            ([model, image, scratch.path("bad.png"), "-o", output], "bad.png"),
            ([model, image, scratch.path("missing.png"), "-o", output], "missing.png"),
            ([model, image, "-o", scratch.path("no/such/folder/out.imatrix")], "does not exist"),
            ([model, image, "-o", scratch.url.path], "is a folder"),
            ([model, image, "-o", output, "--questions-file", scratch.path("empty.txt")], "holds no questions"),
            ([model, image, "-o", output, "--question", " "], "--question is empty"),
            ([model, "-", "-o", output], "standard input"),
            ([model, image, "-o", output, "--question", String(repeating: "why ", count: 200)], "shorten the question or lower --caption-tokens"),
            ([model, image, "-o", output, "--caption-tokens", "120"], "over the model's 128-token context"),
            ([model, image, "-o", output, "--answer-tokens", "0"], "--answer-tokens must be from 1"),
            ([model, "-o", output], "at least one calibration image"),
            ([model, image], "--output"),
            ([scratch.path("bad.png"), image, "-o", output], "bad.png"),
        ]
        for (arguments, needle) in cases {
            let result = try blip2.run(["imatrix"] + arguments)
            #expect(result.status != 0, "\(arguments)")
            #expect(result.stderr.contains(needle), "\(arguments): \(result.stderr)")
            #expect(!scratch.contents.contains { $0.contains("imatrix") }, "\(arguments): left \(scratch.contents)")
        }
        // A failed run leaves an existing matrix as it was.
        try Data("previous".utf8).write(to: URL(fileURLWithPath: output))
        let failed = try blip2.run(["imatrix", model, image, scratch.path("bad.png"), "-o", output])
        #expect(failed.status != 0 && failed.stderr.contains("no importance matrix written"), "\(failed.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: output)) == Data("previous".utf8))
    }
}
