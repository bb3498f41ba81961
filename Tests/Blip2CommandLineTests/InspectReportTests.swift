import Blip2CommandLine
import Blip2Core
import Blip2ModelFile
import Foundation
import Testing

/// `blip2 inspect`'s report of a file written here with a known config, quantization section and tensors.
@Suite struct InspectReportTests {
    /// A file written here with a known config, quantization section and tensors, read back by inspect.
    @Test func inspectReportOfAWrittenFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("blip2-inspect-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("m.blip2").path
        func floatBytes(_ values: [Float]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let config = try Data(contentsOf: root.appendingPathComponent("Tests/Fixtures/models/base-f32/checkpoint/config.json"))
        let writer = try ModelFileWriter(destination: path)
        let known = "language_model.model.decoder.final_layer_norm.weight"
        try floatBytes([1, 2, 3, 4]).withUnsafeBytes { _ = try writer.addTensor(name: known, type: .f32, shape: [4], bytes: $0) }
        try floatBytes((0..<64).map(Float.init)).withUnsafeBytes {
            _ = try writer.addTensor(name: "vision_model.x", type: .f32, shape: [2, 32], bytes: $0, compression: .zstd)
        }
        try floatBytes([5]).withUnsafeBytes { _ = try writer.addTensor(name: "mystery", type: .f32, shape: [1], bytes: $0) }
        let provenance = QuantizationProvenance(
            tool: "blip2-quantize", toolVersion: "9.9.9", sourceDtypes: ["F32"], weights: "q8", compression: "zstd", zstdLevel: 3,
            overrides: [], tensors: ["vision_model.x": TensorProvenance(sourceDtype: "F16", error: 0.5, component: "vision", role: "linear", note: "why")])
        try writer.finish(metadata: [MetadataSection(name: MetadataSectionName.config, json: Array(config)),
                                     MetadataSection(name: MetadataSectionName.quantization, json: Array(try JSONEncoder().encode(provenance)))])

        let report = try InspectReport(path: path, verify: true)
        #expect(report.path == path && report.formatVersion == 1, "no panel types: version 1")
        #expect(report.fileBytes == (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int))
        #expect(report.tensors.map(\.name) == [known, "vision_model.x", "mystery"])
        let x = report.tensors[1]
        #expect(x.shape == [2, 32] && x.bytes == 256 && x.compression == "zstd" && x.storedBytes < 256)
        #expect(x.error == 0.5 && x.component == "vision" && x.sourceDtype == "F16" && x.note == "why")
        #expect(report.tensors[0].component == "language", "a weight the config's manifest knows gets its component from it")
        #expect(report.tensors[0].error == nil && report.tensors[2].component == nil)
        #expect(report.totals["other"]?.parameters == 1 && report.totals["total"]?.parameters == 69)
        #expect(report.totalsByType["f32"]?.tensors == 3)
        #expect(report.quantization?.tensors.count == 1, "the stored section, as stored")
        #expect(report.verify?.checked == 3 && report.verify?.failures == [])
        #expect(report.tokenizer == nil)

        let object = try JSONSerialization.jsonObject(with: JSONEncoder().encode(report)) as! [String: Any]
        #expect(Set(object.keys) == ["path", "file_bytes", "format_version", "quantization", "config", "tensors", "totals",
                                     "totals_by_type", "verify"])
        #expect((object["config"] as? [String: Any])?["num_query_tokens"] as? Int == report.config.numQueryTokens)
        let row = (object["tensors"] as! [[String: Any]])[1]
        #expect(row["offset"] as? Int == report.tensors[1].offset && (row["checksum"] as? String)?.count == 8)
    }
}
