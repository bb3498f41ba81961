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
}
