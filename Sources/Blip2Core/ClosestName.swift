// "Did you mean": the tools' and the server's suggestion for a mistyped name.

/// The one of `names` a mistyped `word` most likely meant, for "did you mean": the nearest by edit
/// distance (insertions, deletions, substitutions and swaps of neighbours), if it is at most 2 and less than
/// the word's length, or the only name the word begins.
public func closestName(to word: String, among names: [String]) -> String? {
    let typed = Array(word.lowercased())
    let scored = names.map { (name: $0, distance: editDistance(typed, Array($0.lowercased()))) }
    if let best = scored.min(by: { $0.distance < $1.distance }), best.distance <= min(2, typed.count - 1),
       scored.filter({ $0.distance == best.distance }).count == 1 {
        return best.name
    }
    let extended = names.filter { $0.hasPrefix(word) }
    return !word.isEmpty && extended.count == 1 ? extended[0] : nil
}

/// Optimal string alignment distance: Levenshtein plus a swap of two neighbours as one edit ("captoin").
func editDistance(_ a: [Character], _ b: [Character]) -> Int {
    guard !a.isEmpty else { return b.count }
    guard !b.isEmpty else { return a.count }
    var d = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
    for i in 0...a.count { d[i][0] = i }
    for j in 0...b.count { d[0][j] = j }
    for i in 1...a.count {
        for j in 1...b.count {
            let cost = a[i - 1] == b[j - 1] ? 0 : 1
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] { d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1) }
        }
    }
    return d[a.count][b.count]
}
