import Blip2ModelFile

// MARK: - A model file's tensors for people (blip2 inspect, blip2-quantize)

public enum TensorListing {
    /// Totals per component and per type, then the tensors that lost the most to quantization.
    public static func summary(_ tensors: [TensorReport], worst count: Int = 5) -> [String] {
        var lines: [String] = []
        let components = TensorTotals.byComponent(tensors)
        var byComponent = TextTable([("component", .left), ("tensors", .right), ("parameters", .right),
                                     ("run time", .right), ("stored", .right)])
        for key in ordered(components.keys, first: ["vision", "qformer", "language", TensorTotals.otherKey]) {
            let t = components[key]!
            byComponent.add([key, "\(t.tensors)", formatCount(t.parameters), formatBytes(t.bytes), formatBytes(t.storedBytes)])
        }
        lines += byComponent.lines()
        lines.append("")

        let types = TensorTotals.byType(tensors)
        var byType = TextTable([("type", .left), ("tensors", .right), ("parameters", .right), ("run time", .right),
                                ("stored", .right), ("bits/weight", .right), ("max rel.err", .right)])
        for key in ordered(types.keys, first: ["f32", "bf16", "f16", "q8", "q4"]) {
            let t = types[key]!
            byType.add([key, "\(t.tensors)", formatCount(t.parameters), formatBytes(t.bytes), formatBytes(t.storedBytes),
                        t.bitsPerWeight.map(formatBits) ?? "-", t.maxError.map(formatError) ?? "-"])
        }
        lines += byType.lines()

        let worst = TensorTotals.worst(tensors, count: count)
        if !worst.isEmpty {
            lines.append("")
            lines.append("largest relative errors:")
            var table = TextTable([("error", .right), ("type", .left), ("tensor", .left)])
            for tensor in worst { table.add([formatError(tensor.error!), tensor.type, tensor.name]) }
            lines += Array(table.lines(indent: "  ").dropFirst())
        }
        return lines
    }

    /// One row per tensor, in file order.
    public static func table(_ tensors: [TensorReport]) -> [String] {
        var table = TextTable([("tensor", .left), ("type", .left), ("shape", .left), ("bytes", .right), ("stored", .right),
                               ("bits/w", .right), ("comp", .left), ("rel.err", .right), ("note", .left)])
        for t in tensors {
            table.add([t.name, t.type, "[" + t.shape.map(String.init).joined(separator: ", ") + "]", formatBytes(t.bytes),
                       formatBytes(t.storedBytes), t.bitsPerWeight.map(formatBits) ?? "-", t.compression,
                       t.error.map(formatError) ?? "-", t.note ?? ""])
        }
        return table.lines()
    }

    static func formatError(_ error: Double) -> String { String(format: "%.2e", error) }
    static func formatBits(_ bits: Double) -> String { String(format: "%.2f", bits) }

    /// `first` in that order where present, then the rest alphabetically, then `total`.
    static func ordered(_ keys: Dictionary<String, TensorTotals>.Keys, first: [String]) -> [String] {
        let present = Set(keys)
        let rest = present.subtracting(first + [TensorTotals.allKey]).sorted()
        return first.filter(present.contains) + rest + (present.contains(TensorTotals.allKey) ? [TensorTotals.allKey] : [])
    }
}
