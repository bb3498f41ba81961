import Foundation
import Testing
@testable import Blip2Core
@testable import Blip2ModelFile

/// What inspect and the converter report: per-tensor rows, totals per component and type, the worst tensors.
@Suite struct ReportTests {
    static func tensor(_ name: String, _ type: String, shape: [Int], bytes: Int, stored: Int? = nil, error: Double?,
                       component: String?) -> TensorReport {
        TensorReport(name: name, type: type, shape: shape, bytes: bytes, storedBytes: stored ?? bytes, compression: "none",
                     error: error, component: component, sourceDtype: "F32", note: nil)
    }

    static let tensors = [
        tensor("a", "q8", shape: [4, 32], bytes: 136, error: 0.004, component: "vision"),
        tensor("b", "q4", shape: [2, 64], bytes: 80, stored: 50, error: 0.07, component: "language"),
        tensor("c", "f32", shape: [8], bytes: 32, error: 0, component: "language"),
        tensor("d", "q4", shape: [32], bytes: 20, error: 0.09, component: nil),
        tensor("e", "q8", shape: [32], bytes: 34, error: 0.004, component: "qformer"),
        tensor("f", "f16", shape: [3], bytes: 6, error: nil, component: "vision"),
    ]

    @Test func totalsPerComponentAndType() {
        let components = TensorTotals.byComponent(Self.tensors)
        #expect(Set(components.keys) == ["vision", "language", "qformer", "other", "total"])
        #expect(components["vision"]?.tensors == 2 && components["vision"]?.parameters == 131 && components["vision"]?.bytes == 142)
        #expect(components["language"]?.parameters == 136 && components["language"]?.storedBytes == 82)
        #expect(components["language"]?.maxError == 0.07)
        #expect(components["other"]?.parameters == 32, "no component: other")
        let total = components["total"]!
        #expect(total.tensors == 6 && total.parameters == 128 + 128 + 8 + 32 + 32 + 3)
        #expect(total.bytes == 136 + 80 + 32 + 20 + 34 + 6 && total.storedBytes == total.bytes - 30)
        #expect(total.maxError == 0.09)

        let types = TensorTotals.byType(Self.tensors)
        #expect(Set(types.keys) == ["q8", "q4", "f32", "f16", "total"])
        #expect(types["q4"]?.tensors == 2 && types["q4"]?.parameters == 160 && types["q4"]?.maxError == 0.09)
        #expect(types["f16"]?.maxError == nil, "no tensor with a known error")
        #expect(types["total"] == total)
    }

    @Test func worstTensorsLargestFirstTiesInFileOrder() {
        #expect(TensorTotals.worst(Self.tensors, count: 3).map(\.name) == ["d", "b", "a"])
        #expect(TensorTotals.worst(Self.tensors, count: 10).map(\.name) == ["d", "b", "a", "e"], "zero and unknown errors are not listed")
        #expect(TensorTotals.worst(Self.tensors, count: 0).isEmpty)
    }

    @Test func jsonFieldNames() throws {
        let row = try JSONSerialization.jsonObject(with: JSONEncoder().encode(Self.tensors[1])) as! [String: Any]
        #expect(Set(row.keys) == ["name", "type", "shape", "bytes", "stored_bytes", "compression", "error", "component", "source_dtype",
                                  "bits_per_weight"],
                "unknown fields (note, offset, checksum) are left out, not null")
        let tensor = Self.tensors[1]
        #expect(row["bits_per_weight"] as? Double == Double(tensor.bytes * 8) / Double(tensor.shape.reduce(1, *)))
        var totals = TensorTotals()
        totals.add(Self.tensors[0])
        let object = try JSONSerialization.jsonObject(with: JSONEncoder().encode(totals)) as! [String: Any]
        #expect(Set(object.keys) == ["tensors", "parameters", "bytes", "stored_bytes", "max_error", "bits_per_weight"])
        #expect(object["bits_per_weight"] as? Double == Double(totals.bytes * 8) / Double(totals.parameters))
        #expect(try JSONDecoder().decode(TensorTotals.self, from: JSONEncoder().encode(totals)) == totals, "totals read back")
    }

    /// A file written here with a known config, quantization section and tensors, read back by inspect.
    @Test func inspectReportOfAWrittenFile() throws {
        let dir = TemporaryDirectory()
        let path = dir.path("m.blip2")
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
