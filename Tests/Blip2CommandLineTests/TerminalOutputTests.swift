import Blip2ModelFile
import Testing
@testable import Blip2CommandLine

@Suite struct TerminalOutputTests {
    @Test func tableColumnsAlignAndLinesCarryNoTrailingBlanks() {
        var table = TextTable([("name", .left), ("n", .right), ("note", .left)])
        table.add(["alpha", "1", "x"])
        table.add(["b", "12345"])
        #expect(table.lines() == [
            "name       n  note",
            "alpha      1  x",
            "b      12345",
        ])
        #expect(table.lines(indent: "  ")[1] == "  alpha      1  x")
        #expect(table.markdown() == ["| name | n | note |", "| --- | ---: | --- |", "| alpha | 1 | x |", "| b | 12345 |  |"])
    }

    @Test func millisecondsKeepThreeSignificantDigits() {
        #expect(formatMilliseconds(1234.56) == "1234.6")
        #expect(formatMilliseconds(187.84) == "187.8")
        #expect(formatMilliseconds(12.345) == "12.35" || formatMilliseconds(12.345) == "12.34")
        #expect(formatMilliseconds(0.7818) == "0.782")
        #expect(formatMilliseconds(0.0042) == "0.004")
    }

    @Test func timeLeftAtTheAverageRate() {
        #expect(ProgressBar.remaining(elapsed: 10, fraction: 0.25) == "0:30")
        #expect(ProgressBar.remaining(elapsed: 600, fraction: 0.1) == "1:30:00")
        #expect(ProgressBar.remaining(elapsed: 0.5, fraction: 0.5) == nil, "too early to tell")
        #expect(ProgressBar.remaining(elapsed: 30, fraction: 0.001) == nil, "too little done to tell")
        #expect(ProgressBar.remaining(elapsed: 30, fraction: 1) == nil)
    }

    @Test func summaryListsComponentsTypesAndTheWorstTensors() {
        func tensor(_ name: String, _ type: String, _ error: Double, _ component: String) -> TensorReport {
            TensorReport(name: name, type: type, shape: [32], bytes: 20, storedBytes: 20, compression: "none", error: error,
                         component: component, sourceDtype: "F32", note: nil)
        }
        let tensors = [tensor("v.w", "q8", 0.005, "vision"), tensor("l.w", "q4", 0.08, "language"), tensor("l.b", "f32", 0, "language")]
        let lines = TensorListing.summary(tensors, worst: 1)
        #expect(lines.contains { $0.hasPrefix("vision ") && $0.hasSuffix("20 B") })
        #expect(lines.firstIndex { $0.hasPrefix("vision") }! < lines.firstIndex { $0.hasPrefix("language") }!, "components in model order")
        #expect(lines.contains { $0.hasPrefix("q4 ") && $0.hasSuffix("8.00e-02") })
        #expect(lines.last == "  8.00e-02  q4    l.w")
        #expect(!lines.contains { $0.contains("v.w") }, "only the worst one")
        #expect(TensorListing.table(tensors).count == 4)
    }
}
