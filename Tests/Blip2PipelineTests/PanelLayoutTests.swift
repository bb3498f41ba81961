import Blip2Core
import Blip2Generation
import Blip2ModelFile
import CKernels
import Foundation
import Testing
@testable import Blip2Pipeline

/// The panel formats are a layout, not a quantization: the bundled demo model (q8 row blocks) repacked into
/// q8p panels answers every example with the same tokens.
@Suite struct PanelLayoutTests {
    /// A copy of `source` whose q8 matrices (except the token embeddings) are stored as q8p panels.
    static func repackedAsPanels(_ source: ModelFile, to path: String) throws {
        let writer = try ModelFileWriter(destination: path)
        for record in source.tensors {
            let data = try source.data(of: record)
            let isMatrix = record.shape.count == 2 && record.type == .q8 && !record.name.hasSuffix("embed_tokens.weight")
            guard isMatrix else {
                try writer.addTensor(name: record.name, type: record.type, shape: record.shape, bytes: UnsafeRawBufferPointer(data))
                continue
            }
            let (rows, cols) = (record.shape[0], record.shape[1])
            let nb = cols / 32
            var panels = [UInt8](repeating: 0, count: ElementType.q8p.byteCount(shape: record.shape)!)
            panels.withUnsafeMutableBytes { out in
                let dst = out.baseAddress!.assumingMemoryBound(to: blip2_panel_q8.self)
                let src = data.baseAddress!.assumingMemoryBound(to: blip2_block_q8.self)
                for r in 0..<rows {
                    for b in 0..<nb { blip2_pack_q8(src + r * nb + b, r % 8, dst + (r / 8) * nb + b) }
                }
            }
            try panels.withUnsafeBytes { try writer.addTensor(name: record.name, type: .q8p, shape: record.shape, bytes: $0) }
        }
        try writer.finish(metadata: source.sections)
    }

    @Test func demoAnswersAreTheSameFromPanels() throws {
        let models = DemoModelTests.models
        let rowsPath = models.appendingPathComponent("demo-q8.blip2").path
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("blip2-panels-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let panelsPath = directory.appendingPathComponent("demo-q8p.blip2").path
        try Self.repackedAsPanels(try ModelFile(path: rowsPath), to: panelsPath)
        let panelFile = try ModelFile(path: panelsPath)
        #expect(panelFile.tensors.contains { $0.type == .q8p } && panelFile.formatVersion == 2)

        let rows = try Pipeline(modelPath: rowsPath), panels = try Pipeline(modelPath: panelsPath)
        let demo = try JSONDecoder().decode(DemoExamples.self, from: Data(contentsOf: models.appendingPathComponent("examples/examples.json")))
        var options = GenerationOptions()
        options.maxNewTokens = 20
        var compared = 0
        for example in demo.examples {
            let a = try DemoModelTests.encode(example, with: rows), b = try DemoModelTests.encode(example, with: panels)
            let scale = a.embeddings.map(abs).max() ?? 1
            let worst = zip(a.embeddings, b.embeddings).map { abs($0 - $1) }.max() ?? 0
            // The two layouts sum in different orders (differences near 1e-7 relative); where such a difference
            // moves an activation across a rounding boundary of its 8-bit block quantization, the next layer sees
            // one quantization step of that block instead (measured up to 2.5% of the largest embedding on these
            // images). A wrong row or scale would be of the order of the values themselves.
            #expect(worst <= 0.05 * scale, "\(example.file): image embeddings differ by \(worst) (largest \(scale))")
            for prompt in [nil] + example.questions.map(\.prompt) {
                let x = try rows.generate(image: a, prompt: prompt, options: options)
                let y = try panels.generate(image: b, prompt: prompt, options: options)
                #expect(x.sequences.map(\.tokens) == y.sequences.map(\.tokens), "\(example.file): \(prompt ?? "caption")")
                compared += 1
            }
        }
        #expect(compared == demo.examples.count * 5)
    }
}
