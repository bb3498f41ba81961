// MARK: - Tables for people: aligned columns, or Markdown

/// Rows of cells under a header, each column as wide as its widest cell.
public struct TextTable {
    public enum Alignment: Sendable { case left, right }

    public let titles: [String]
    public let alignments: [Alignment]
    public private(set) var rows: [[String]] = []

    /// `columns`: title and alignment of each column.
    public init(_ columns: [(String, Alignment)]) {
        titles = columns.map(\.0)
        alignments = columns.map(\.1)
    }

    /// Adds a row; missing cells are empty, extra cells are dropped.
    public mutating func add(_ cells: [String]) {
        rows.append((0..<titles.count).map { $0 < cells.count ? cells[$0] : "" })
    }

    /// Space-separated columns; the last left-aligned column is not padded, so lines carry no trailing blanks.
    public func lines(indent: String = "") -> [String] {
        let widths = titles.indices.map { column in ([titles] + rows).map { $0[column].count }.max() ?? 0 }
        func render(_ cells: [String]) -> String {
            let padded = cells.indices.map { column -> String in
                let cell = cells[column], gap = String(repeating: " ", count: widths[column] - cell.count)
                if alignments[column] == .right { return gap + cell }
                return column == cells.count - 1 ? cell : cell + gap
            }
            var line = indent + padded.joined(separator: "  ")
            while line.last == " " { line.removeLast() }
            return line
        }
        return ([titles] + rows).map(render)
    }

    /// A GitHub-flavoured Markdown table.
    public func markdown() -> [String] {
        let rule = alignments.map { $0 == .right ? "---:" : "---" }
        return ([titles, rule] + rows).map { "| " + $0.joined(separator: " | ") + " |" }
    }
}

/// Milliseconds with at least three significant digits down to a microsecond: 1234.5, 12.35, 0.123, 0.004.
public func formatMilliseconds(_ value: Double) -> String {
    let magnitude = abs(value)
    let decimals = magnitude >= 100 ? 1 : magnitude >= 10 ? 2 : 3
    return String(format: "%.\(decimals)f", value)
}
