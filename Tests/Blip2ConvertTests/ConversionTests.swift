import Blip2Configs
import Blip2Core
import CKernels
import Foundation
import Testing
@testable import Blip2Convert
@testable import Blip2ModelFile

/// Every fixture checkpoint (written by transformers' save_pretrained) converts at every precision,
/// with and without zstd, and the file holds every model tensor with the checkpoint's shape.
@Suite struct ConversionTests {
    static let cases: [(String, WeightPrecision, TensorCompression)] = fixtureNames.flatMap { model in
        WeightPrecision.allCases.flatMap { w in [TensorCompression.none, .zstd].map { (model, w, $0) } }
    }

    @Test(arguments: cases)
    func convertsEveryFixture(model: String, weights: WeightPrecision, compression: TensorCompression) throws {
        let scratch = Scratch()
        let output = scratch.path("out.blip2")
        var options = ConversionOptions()
        options.weights = weights
        options.compression = compression
        let report = try Converter.convert(checkpoint: checkpoint(model), output: output, options: options)
        #expect(scratch.contents == ["out.blip2"])

        let file = try ModelFile(path: output)
        let config = try file.decode(Blip2Config.self, section: MetadataSectionName.config)
        let expected = try FixtureTensorList.load(model).tensors.filter {
            !($0.name == WeightManifest.outputHeadKey && config.textConfig.tieWordEmbeddings)
        }
        #expect(Set(file.tensors.map(\.name)) == Set(expected.map(\.name)), "the file holds exactly the checkpoint's model tensors")
        let source = try SourceTensors(checkpoint(model))
        for tensor in expected {
            let record = try #require(file.tensor(named: tensor.name))
            #expect(record.shape == tensor.shape, "\(tensor.name)")
            #expect(record.compression == compression)
            let stored = try file.data(of: record)
            let reference = try source.values(tensor.name)
            // Row by row through the type's own conversion (panel types interleave eight rows).
            let cols = record.shape.count >= 2 ? record.shape.last! : max(record.elementCount, 1)
            var decoded = [Float](repeating: 0, count: record.elementCount)
            decoded.withUnsafeMutableBufferPointer { out in
                for r in 0..<(record.elementCount / cols) { record.type.traits.to_f32(stored.baseAddress!, r, cols, out.baseAddress! + r * cols) }
            }
            let error = relativeError(reference, decoded)
            switch record.type {
            case .f32:
                // Bit for bit: f32 sources copy, f16/bf16 sources widen exactly.
                #expect(decoded.map(\.bitPattern) == reference.map(\.bitPattern), "\(tensor.name)")
            case .f16:
                #expect(error < 1e-3, "\(tensor.name): \(error)")
            case .q8, .q8p:
                #expect(error < 0.02, "\(tensor.name): \(error)")
            case .q4, .q4p, .q4k:
                #expect(error < 0.15, "\(tensor.name): \(error)")
            case .q6k:
                #expect(error < 0.04, "\(tensor.name): \(error)")
            case .q3k:
                #expect(error < 0.3, "\(tensor.name): \(error)")
            default:
                Issue.record("the converter never writes \(record.type)")
            }
            let reported = try #require(report.tensors.first { $0.name == tensor.name })
            let reportedError = try #require(reported.error, "\(tensor.name): the converter reports every tensor's error")
            #expect(abs(reportedError - error) <= 1e-6 + error * 1e-3, "\(tensor.name): reported \(reportedError), measured \(error)")
            #expect(reported.bytes == record.size && reported.storedBytes == record.storedSize)
        }
        #expect(file.verifyAll().isEmpty)
        #expect(report.totals["total"]?.parameters == expected.reduce(0) { $0 + $1.shape.reduce(1, *) })
    }

    @Test func defaultPolicyByRole() throws {
        let scratch = Scratch()
        var options = ConversionOptions()
        options.weights = .q4
        _ = try Converter.convert(checkpoint: checkpoint("base-f32"), output: scratch.path("q4.blip2"), options: options)
        let file = try ModelFile(path: scratch.path("q4.blip2"))
        let type = { (name: String) in file.tensor(named: name)?.type }
        #expect(type("language_model.model.decoder.layers.0.fc1.weight") == .q4p)
        #expect(type("vision_model.encoder.layers.0.self_attn.qkv.weight") == .q4p)
        #expect(type("language_model.model.decoder.embed_tokens.weight") == .q8p)
        #expect(type("vision_model.embeddings.patch_embedding.weight") == .f16)
        #expect(type("language_model.model.decoder.layers.0.fc1.bias") == .f32)
        #expect(type("qformer.layernorm.weight") == .f32)
        #expect(type("query_tokens") == .f32)
        #expect(type("language_model.model.decoder.embed_positions.weight") == .f32)
        let provenance = try file.decode(QuantizationProvenance.self, section: MetadataSectionName.quantization)
        #expect(provenance.weights == "q4" && provenance.tool == "blip2-quantize" && provenance.sourceDtypes == ["F32"])
        #expect(provenance.tensors.count == file.tensors.count)
    }

    @Test func widthsThatAreNotWholeBlocksFallBackToF16() throws {
        let scratch = Scratch()
        var options = ConversionOptions()
        options.weights = .q8
        let report = try Converter.convert(checkpoint: checkpoint("odd-hidden-f32"), output: scratch.path("o.blip2"), options: options)
        let fallbacks = report.tensors.filter { $0.note?.contains("stored as f16") == true }
        #expect(!fallbacks.isEmpty)
        for tensor in fallbacks {
            #expect(tensor.type == "f16")
            #expect(tensor.shape.last! % 32 != 0)
        }
        for tensor in report.tensors where tensor.type == "q8" || tensor.type == "q8p" { #expect(tensor.shape.last! % 32 == 0) }
    }

    @Test func overridesWinAndAreChecked() throws {
        let scratch = Scratch()
        var options = ConversionOptions()
        options.weights = .q4
        options.overrides = [try PrecisionOverride(parsing: "language_model.*.fc1.weight=q8"), try PrecisionOverride(parsing: "*.layers.1.fc1.weight=f32")]
        _ = try Converter.convert(checkpoint: checkpoint("base-f32"), output: scratch.path("o.blip2"), options: options)
        let file = try ModelFile(path: scratch.path("o.blip2"))
        #expect(file.tensor(named: "language_model.model.decoder.layers.0.fc1.weight")?.type == .q8)
        #expect(file.tensor(named: "language_model.model.decoder.layers.1.fc1.weight")?.type == .f32, "the last matching override wins")
        #expect(file.tensor(named: "language_model.model.decoder.layers.0.fc2.weight")?.type == .q4p)

        for (text, needle) in [("nothing.matches=q8", "matches no tensor"), ("qformer.layernorm.weight=q4", "shape [64]")] {
            options.overrides = [try PrecisionOverride(parsing: text)]
            #expect { try Converter.convert(checkpoint: checkpoint("base-f32"), output: scratch.path("bad.blip2"), options: options) } throws: {
                "\($0)".contains(needle)
            }
        }
        #expect(throws: ConversionError.self) { try PrecisionOverride(parsing: "*.weight=q3") }
        #expect(throws: ConversionError.self) { try PrecisionOverride(parsing: "no-equals") }
        #expect(!scratch.contents.contains("bad.blip2"))
    }

    /// q4k-m: the Q-Former's linear weights and the language projection in q6k, every other linear weight q4k;
    /// embeddings stay q8;
    /// the file is format version 3 (the first that holds super-block types).
    @Test func superBlockMixedPolicy() throws {
        let scratch = Scratch()
        var options = ConversionOptions()
        options.weights = .q4kMixed
        _ = try Converter.convert(checkpoint: checkpoint("base-f32"), output: scratch.path("m.blip2"), options: options)
        let file = try ModelFile(path: scratch.path("m.blip2"))
        #expect(file.formatVersion == 3)
        let manifest = try WeightManifest(config: try Checkpoint(folder: checkpoint("base-f32")).config)
        #expect(file.tensor(named: "language_model.model.decoder.embed_tokens.weight")?.type == .q8p)
        for tensor in manifest.weights where tensor.role == .linearWeight {
            let type = try #require(file.tensor(named: tensor.name)).type
            if tensor.name.hasPrefix("qformer.") || tensor.name == "language_projection.weight" {
                #expect(type == .q6k, "\(tensor.name)")
            } else {
                #expect(type == .q4k, "\(tensor.name)")
            }
        }
        #expect(try file.decode(QuantizationProvenance.self, section: MetadataSectionName.quantization).weights == "q4k-m")
        // Files without the new types keep the older versions, so older readers still open them.
        options.weights = .q4
        _ = try Converter.convert(checkpoint: checkpoint("base-f32"), output: scratch.path("q4.blip2"), options: options)
        #expect(try ModelFile(path: scratch.path("q4.blip2")).formatVersion == 2)
    }

    /// An importance matrix weights every quantized fit: the importance-weighted error of each matrix goes
    /// down (summed over the model), the file records it, and a matrix that names no weight or has the
    /// wrong column count is refused before anything is written.
    @Test(arguments: [WeightPrecision.q4k, .q3k, .q4, .q8])
    func importanceWeightsTheFits(weights: WeightPrecision) throws {
        let scratch = Scratch()
        let manifest = try WeightManifest(config: try Checkpoint(folder: checkpoint("base-f32")).config)
        var rng = SystemRandomNumberGenerator()
        var entries: [String: ImportanceMatrix.Entry] = [:]
        for spec in manifest.weights where spec.role == .linearWeight {
            // A few heavy columns, as real activations have.
            entries[spec.name] = .init(values: (0..<spec.shape[1]).map { i in Float.random(in: 0.1...1, using: &rng) * (i % 9 == 0 ? 40 : 1) }, tokens: 100)
        }
        let importance = ImportanceMatrix(entries: entries)
        var options = ConversionOptions()
        options.weights = weights
        _ = try Converter.convert(checkpoint: checkpoint("base-f32"), output: scratch.path("plain.blip2"), options: options)
        options.importance = importance
        options.importanceFile = "/somewhere/calibration.imatrix"
        _ = try Converter.convert(checkpoint: checkpoint("base-f32"), output: scratch.path("weighted.blip2"), options: options)
        let plain = try ModelFile(path: scratch.path("plain.blip2")), weighted = try ModelFile(path: scratch.path("weighted.blip2"))
        let record = try weighted.decode(QuantizationProvenance.self, section: MetadataSectionName.quantization).imatrix
        #expect(record == ImportanceProvenance(file: "calibration.imatrix", matrices: entries.count))
        let source = try SourceTensors(checkpoint("base-f32"))
        var plainError = 0.0, weightedError = 0.0
        for (name, entry) in entries {
            let reference = try source.values(name)
            let cols = entry.values.count
            for (file, total) in [(plain, 0), (weighted, 1)] {
                let tensor = try #require(file.tensor(named: name))
                let stored = try file.data(of: tensor)
                var row = [Float](repeating: 0, count: cols), sum = 0.0
                for r in 0..<(reference.count / cols) {
                    tensor.type.traits.to_f32(stored.baseAddress!, r, cols, &row)
                    for i in 0..<cols { sum += Double(entry.values[i]) * pow(Double(reference[r * cols + i] - row[i]), 2) }
                }
                if total == 0 { plainError += sum } else { weightedError += sum }
            }
        }
        #expect(weightedError < 0.95 * plainError, "\(weights): weighted error \(weightedError) vs \(plainError) without importance")

        let name = "language_model.model.decoder.layers.0.fc1.weight"
        var wrongWidth = entries
        wrongWidth[name] = .init(values: [1, 2, 3], tokens: 1)
        var unknown = entries
        unknown["language_model.model.decoder.layers.99.fc1.weight"] = .init(values: [1], tokens: 1)
        for (bad, needle) in [(wrongWidth, name), (unknown, "layers.99")] {
            options.importance = ImportanceMatrix(entries: bad)
            #expect { try Converter.convert(checkpoint: checkpoint("base-f32"), output: scratch.path("bad.blip2"), options: options) } throws: {
                "\($0)".contains(needle)
            }
        }
        #expect(!scratch.contents.contains("bad.blip2"))
    }

    /// `mixed`: q4 where decoding streams the weights (language model), q8 where images are encoded.
    @Test func mixedPolicySplitsByComponent() throws {
        let scratch = Scratch()
        var options = ConversionOptions()
        options.weights = .mixed
        _ = try Converter.convert(checkpoint: checkpoint("base-f32"), output: scratch.path("m.blip2"), options: options)
        let file = try ModelFile(path: scratch.path("m.blip2"))
        let manifest = try WeightManifest(config: try file.decode(Blip2Config.self, section: MetadataSectionName.config))
        var seen: Set<ElementType> = []
        for spec in manifest.weights {
            let type = try #require(file.tensor(named: spec.name)?.type, "\(spec.name) missing")
            switch spec.role {
            case .linearWeight:
                #expect(type == (spec.component == .language ? .q4p : .q8p), "\(spec.name) is \(type)")
                seen.insert(type)
            case .tokenEmbedding, .outputHead:
                #expect(type == .q8p, "\(spec.name) is \(type)")
            case .patchEmbedding:
                #expect(type == .f16, "\(spec.name) is \(type)")
            default:
                #expect(type == .f32, "\(spec.name) is \(type)")
            }
        }
        #expect(seen == [.q4p, .q8p])
        #expect(try file.decode(QuantizationProvenance.self, section: MetadataSectionName.quantization).weights == "mixed")
    }

    /// Older checkpoints store the vision attention bias as q_bias and v_bias.
    @Test func legacyQAndVBiasesAreFused() throws {
        let scratch = Scratch()
        let folder = try scratch.copy(of: "base-f32")
        let weights = folder.appendingPathComponent("model.safetensors")
        let original = try SafeTensorsBuilder.reading(weights)
        var legacy = SafeTensorsBuilder()
        var fused: [String: [Float]] = [:]
        for item in original.items {
            guard item.name.hasSuffix("self_attn.qkv.bias") else {
                legacy.add(item.name, dtype: item.dtype, shape: item.shape, bytes: item.bytes)
                continue
            }
            let values = item.bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            let h = values.count / 3
            let prefix = String(item.name.dropLast("qkv.bias".count))
            let q = Array(values[0..<h]).map { $0 + 0.25 }, v = Array(values[(2 * h)...]).map { $0 - 0.5 }
            legacy.add(prefix + "q_bias", dtype: "F32", shape: [h], bytes: q.withUnsafeBytes { Array($0) })
            legacy.add(prefix + "v_bias", dtype: "F32", shape: [h], bytes: v.withUnsafeBytes { Array($0) })
            fused[item.name] = q + [Float](repeating: 0, count: h) + v
        }
        #expect(!fused.isEmpty)
        try legacy.write(to: weights)
        var options = ConversionOptions()
        options.weights = .f32
        _ = try Converter.convert(checkpoint: folder, output: scratch.path("o.blip2"), options: options)
        let file = try ModelFile(path: scratch.path("o.blip2"))
        for (name, expected) in fused { #expect(floats(try file.data(named: name)) == expected) }
    }
}

/// Reads a checkpoint's tensors as f32, widening f16/bf16 with Swift's own conversions.
struct SourceTensors {
    let files: [SafeTensorsFile]
    init(_ folder: URL) throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".safetensors") }
        files = try names.map { try SafeTensorsFile(path: folder.appendingPathComponent($0).path) }
    }
    func values(_ name: String) throws -> [Float] {
        for file in files {
            guard let entry = file.entry(named: name) else { continue }
            let bytes = file.bytes(of: entry)
            switch entry.dtype {
            case .f32: return Array(bytes.bindMemory(to: Float.self))
            case .f16: return bytes.bindMemory(to: UInt16.self).map { Float(Float16(bitPattern: $0)) }
            case .bf16: return bytes.bindMemory(to: UInt16.self).map { Float(bitPattern: UInt32($0) << 16) }
            case .other(let dtype, _): throw ConversionError("unexpected dtype \(dtype)")
            }
        }
        throw ConversionError("no tensor \(name)")
    }
}

func relativeError(_ x: [Float], _ y: [Float]) -> Double {
    var e = 0.0, n = 0.0
    for (a, b) in zip(x, y) {
        e += Double(a - b) * Double(a - b)
        n += Double(a) * Double(a)
    }
    return n == 0 ? (e == 0 ? 0 : .infinity) : (e / n).squareRoot()
}
