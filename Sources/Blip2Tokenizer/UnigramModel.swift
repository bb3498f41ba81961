import Foundation

// MARK: - The Unigram model (SentencePiece)

/// SentencePiece's Unigram segmentation as `tokenizers` runs it: the split of a word that maximizes the sum
/// of its pieces' scores (Viterbi over byte positions, stepping one character at a time). A character no piece
/// starts with becomes an unknown node scored `min(score) - 10`; consecutive unknown characters fuse into one
/// unknown token, which byte fallback (when the model has it and every byte has its `<0xNN>` piece) spells as
/// bytes instead of `unk_id`.
struct UnigramModel: Sendable {
    /// Piece text (UTF-8) and score, indexed by id.
    let pieces: [String]
    let scores: [Double]
    let unknownId: Int
    let byteFallback: Bool
    /// Id of `<0xNN>` for each byte, or -1.
    private let byteIds: [Int32]
    private let trie: ByteTrie
    private let unknownScore: Double
    private let lookup: TokenTable

    /// Penalty below the lowest piece score given to an unknown character (`K_UNK_PENALTY`).
    static let unknownPenalty = 10.0

    init(pieces: [String], scores: [Double], unknownId: Int, byteFallback: Bool) throws {
        guard !pieces.isEmpty else {
            throw TokenizerError.malformedJSON(name: "tokenizer.json", reason: "the Unigram vocabulary is empty; it needs at least the unknown piece")
        }
        guard unknownId >= 0, unknownId < pieces.count else {
            throw TokenizerError.malformedJSON(name: "tokenizer.json", reason: "unk_id \(unknownId) is outside the \(pieces.count)-piece vocabulary")
        }
        guard scores.allSatisfy({ $0.isFinite }) else {
            throw TokenizerError.malformedJSON(name: "tokenizer.json", reason: "a Unigram piece score is not a finite number")
        }
        self.pieces = pieces
        self.scores = scores
        self.unknownId = unknownId
        self.byteFallback = byteFallback
        // A repeated piece keeps its last id, as the reference's token-to-id map does.
        var vocab = [String: Int](minimumCapacity: pieces.count)
        for (id, piece) in pieces.enumerated() { vocab[piece] = id }
        lookup = TokenTable(vocab)
        var builder = ByteTrie()
        for (piece, id) in vocab where !piece.isEmpty { builder.insert(Array(piece.utf8), id: Int32(id)) }
        trie = builder
        unknownScore = (scores.min() ?? 0) - Self.unknownPenalty
        byteIds = (0..<256).map { byte in
            vocab[String(format: "<0x%02X>", byte)].map { Int32($0) } ?? -1
        }
    }

    func id(of piece: String) -> Int? { lookup.id(of: piece) }

    /// Appends the ids of one pre-tokenized word (`bytes` is valid UTF-8).
    func encode(_ bytes: UnsafeBufferPointer<UInt8>, into output: inout [Int]) {
        let size = bytes.count
        guard size > 0 else { return }
        // best[end]: the best path over bytes[0..<end]: its score, where its last piece starts, that piece's id.
        var bestScore = [Double](repeating: 0, count: size + 1)
        var bestStart = [Int](repeating: -1, count: size + 1)
        var bestId = [Int](repeating: 0, count: size + 1)
        var start = 0
        while start < size {
            let scoreHere = bestScore[start]
            let characterLength = Self.utf8Length(lead: bytes[start], available: size - start)
            var hasSingleCharacterPiece = false
            trie.forEachPrefix(of: bytes, from: start) { end, id in
                let candidate = scores[id] + scoreHere
                if bestStart[end] < 0 || candidate > bestScore[end] {
                    bestScore[end] = candidate
                    bestStart[end] = start
                    bestId[end] = id
                }
                if end - start == characterLength { hasSingleCharacterPiece = true }
            }
            if !hasSingleCharacterPiece {
                let end = start + characterLength
                let candidate = unknownScore + scoreHere
                if bestStart[end] < 0 || candidate > bestScore[end] {
                    bestScore[end] = candidate
                    bestStart[end] = start
                    bestId[end] = unknownId
                }
            }
            start += characterLength
        }
        // Walk back, fusing runs of unknown nodes.
        var spans: [(start: Int, end: Int, id: Int)] = []
        var end = size
        while end > 0 {
            let begin = bestStart[end]
            let id = bestId[end]
            if id == unknownId, let last = spans.last, last.id == unknownId, last.start == end {
                spans[spans.count - 1].start = begin
            } else {
                spans.append((begin, end, id))
            }
            end = begin
        }
        for span in spans.reversed() {
            guard span.id == unknownId else {
                output.append(span.id)
                continue
            }
            // The reference looks the (fused) unknown text up again: it may spell a piece after all.
            let text = UnsafeBufferPointer(rebasing: bytes[span.start..<span.end])
            if let id = lookup.id(of: text) {
                output.append(id)
            } else if byteFallback, text.allSatisfy({ byteIds[Int($0)] >= 0 }) {
                for byte in text { output.append(Int(byteIds[Int(byte)])) }
            } else {
                output.append(unknownId)
            }
        }
    }

    @inline(__always)
    static func utf8Length(lead: UInt8, available: Int) -> Int {
        let length: Int
        switch lead {
        case 0..<0xC0: length = 1
        case 0xC0..<0xE0: length = 2
        case 0xE0..<0xF0: length = 3
        default: length = 4
        }
        return min(length, available)
    }
}

/// A byte trie over the pieces, for the common-prefix search at each position.
struct ByteTrie: Sendable {
    /// Child node of (node, byte), keyed `node << 8 | byte`.
    private var children: [Int: Int32] = [:]
    /// Piece id ending at each node, or -1.
    private var ids: [Int32] = [-1]

    mutating func insert(_ bytes: [UInt8], id: Int32) {
        var node = 0
        for byte in bytes {
            let key = node << 8 | Int(byte)
            if let child = children[key] {
                node = Int(child)
            } else {
                let child = ids.count
                ids.append(-1)
                children[key] = Int32(child)
                node = child
            }
        }
        ids[node] = id
    }

    /// Calls `body(end, id)` for every piece that starts at `start`, shortest first.
    @inline(__always)
    func forEachPrefix(of bytes: UnsafeBufferPointer<UInt8>, from start: Int, _ body: (Int, Int) -> Void) {
        var node = 0
        var position = start
        while position < bytes.count, let child = children[node << 8 | Int(bytes[position])] {
            node = Int(child)
            position += 1
            let id = ids[node]
            if id >= 0 { body(position, Int(id)) }
        }
    }
}
