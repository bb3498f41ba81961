import Foundation

// MARK: - The tokenizer
//
// Encoding, as transformers 5.x + tokenizers 0.23 do it for BLIP-2-OPT:
//   1. added tokens typed in the text (`</s>`, `<pad>`, `<image>`; not `<s>`, `<unk>`, `<mask>`,
//      which OPT's files do not declare) are cut out first; the spaces around them stay in the text;
//   2. the rest is split by the GPT-2 regex (PreTokenizer.swift) and each piece is spelled in
//      GPT-2's byte alphabet (ByteLevel.swift);
//   3. each piece is merged by BPE rank (BytePairEncoding.swift), with results cached per piece;
//   4. BOS (`</s>`, id 2) goes in front.
// Decoding joins the bytes of every known, non-skipped id and decodes them as UTF-8 with U+FFFD for
// each invalid or incomplete sequence (Rust's from_utf8_lossy; Python's errors="replace" agrees).
// transformers 5 never applies clean_up_tokenization_spaces to a BPE tokenizer (it logs a warning and
// ignores the flag), so `decode` does no cleanup. The BLIP-2 examples then call Python's `.strip()`
// on the text; `decodeStripped` and `TokenStreamDecoder(stripWhitespace:)` reproduce that.

/// OPT's tokenizer as `transformers` 5.x builds it for BLIP-2-OPT: GPT-2 byte-level BPE with
/// fairseq/RoBERTa ids, added tokens split out before BPE, BOS (`</s>`) prepended.
///
/// Immutable after `init` apart from an internal word cache, so one instance can be shared by
/// any number of threads.
public final class OPTTokenizer: Sendable {
    /// Number of distinct tokens, vocabulary plus added tokens (`len(tokenizer)` in Python: 50266 for BLIP-2-OPT).
    public let vocabularySize: Int
    public let bosTokenId: Int
    public let eosTokenId: Int
    public let padTokenId: Int?
    public let unkTokenId: Int?
    /// Id of the token `Blip2Processor` repeats for the query embeddings (50265 for BLIP-2-OPT).
    public let imageTokenId: Int?
    /// Whether `encode(_:addBOS: true)` prepends BOS (the files' `add_bos_token`; true for OPT).
    public let addsBosToken: Bool
    /// Whether `encode(_:addBOS: true)` appends EOS (the files' `add_eos_token`; false for OPT).
    public let addsEosToken: Bool
    /// The added tokens, sorted by id.
    public let addedTokens: [AddedToken]

    private let addPrefixSpace: Bool
    /// Token bytes -> id, vocabulary and added tokens (added ones win, as in the reference).
    private let lookup: TokenTable
    private let tokenForId: [String?]
    /// Vocabulary id of each byte's one-character token, or -1 (such bytes are dropped, like the reference does).
    private let byteSymbols: [Int32]
    private let merges: MergeTable
    private let splitter: AddedTokenSplitter
    /// Bytes each id decodes to: `decodeBytes[decodeOffsets[id] ..< decodeOffsets[id + 1]]`.
    private let decodeBytes: [UInt8]
    private let decodeOffsets: [Int32]
    private let specialIds: [Bool]
    private let cache = WordCache()

    /// Builds the tokenizer, validating everything `data` says.
    ///
    /// - Throws: `TokenizerError` for out-of-range or duplicate ids, malformed merges, merges over
    ///   symbols the vocabulary lacks, or special tokens that name nothing.
    public init(_ data: TokenizerData) throws {
        var highestId = try TokenizerData.validateVocabulary(data.vocab)
        let table = TokenTable(data.vocab)

        var addedIds: [String: Int] = [:]
        var seenAddedIds = Set<Int>()
        for token in data.addedTokens {
            guard token.id >= 0, token.id < TokenizerLimits.maximumTokenId else {
                throw TokenizerError.invalidTokenId(token: token.content, id: token.id)
            }
            if !seenAddedIds.insert(token.id).inserted {
                let other = data.addedTokens.first { $0.id == token.id && $0 != token }?.content ?? token.content
                throw TokenizerError.duplicateTokenId(id: token.id, first: other, second: token.content)
            }
            if token.content.isEmpty { continue }
            addedIds[token.content] = token.id
            highestId = max(highestId, token.id)
        }
        addedTokens = data.addedTokens.sorted { $0.id < $1.id }

        var tokens = [String?](repeating: nil, count: highestId + 1)
        for (token, id) in data.vocab { tokens[id] = token }
        for token in data.addedTokens where !token.content.isEmpty { tokens[token.id] = token.content }
        tokenForId = tokens
        vocabularySize = data.vocab.count + addedIds.keys.filter { table.id(of: $0) == nil }.count
        var combined = table
        for (content, id) in addedIds { combined.insert(content, id: id) }
        lookup = combined

        byteSymbols = (0..<256).map { byte in
            table.id(of: ByteLevel.token(forByte: UInt8(byte))).map { Int32($0) } ?? -1
        }

        let rules = try table.resolve(data.merges)
        var mergeTable = MergeTable(capacityFor: rules.count)
        for (rank, rule) in rules.enumerated() {
            mergeTable.insert(left: rule.left, right: rule.right, rank: Int32(rank), merged: rule.merged)
        }
        merges = mergeTable
        splitter = AddedTokenSplitter(tokens: data.addedTokens)

        var bytes: [UInt8] = []
        bytes.reserveCapacity(tokens.count * 6)
        var offsets: [Int32] = [0]
        offsets.reserveCapacity(tokens.count + 1)
        for token in tokens {
            if let token { ByteLevel.appendDecodedBytes(ofToken: token, to: &bytes) }
            offsets.append(Int32(bytes.count))
        }
        decodeBytes = bytes
        decodeOffsets = offsets

        // The reference decides "special" by the token's text, so every id spelled like a special token is skipped.
        var special = [Bool](repeating: false, count: tokens.count)
        for token in data.addedTokens where token.special && !token.content.isEmpty {
            for id in [token.id, table.id(of: token.content)].compactMap({ $0 }) where tokens[id] == token.content {
                special[id] = true
            }
        }
        specialIds = special

        func resolve(_ role: String, _ token: String?) throws -> Int? {
            guard let token else { return nil }
            guard let id = addedIds[token] ?? table.id(of: token) else {
                throw TokenizerError.missingSpecialToken(role: role, token: token)
            }
            return id
        }
        guard let bos = try resolve("bos", data.bosToken) else {
            throw TokenizerError.missingSpecialToken(role: "bos", token: nil)
        }
        guard let eos = try resolve("eos", data.eosToken) else {
            throw TokenizerError.missingSpecialToken(role: "eos", token: nil)
        }
        bosTokenId = bos
        eosTokenId = eos
        padTokenId = try resolve("pad", data.padToken)
        unkTokenId = try resolve("unk", data.unkToken)
        imageTokenId = try resolve("image", data.imageToken)
        addsBosToken = data.addBosToken
        addsEosToken = data.addEosToken
        addPrefixSpace = data.addPrefixSpace

        _ = ScalarClassifier.basicPlane  // build the class table now rather than during the first encode
    }

    // MARK: Encoding

    /// Token ids for `text`, as `tokenizer(text)["input_ids"]` (or with `add_special_tokens=False`
    /// when `addBOS` is false). `addBOS` adds the special tokens the files ask for: BOS for OPT
    /// (`add_bos_token`), and EOS after the text only if `add_eos_token` is set.
    public func encode(_ text: String, addBOS: Bool = true) -> [Int] {
        var output: [Int] = []
        output.reserveCapacity(text.utf8.count / 3 + 2)
        if addBOS && addsBosToken { output.append(bosTokenId) }
        var text = text
        text.withUTF8 { bytes in
            var pieces: [AddedTokenSplitter.Piece] = []
            splitter.split(bytes, into: &pieces)
            var preScratch = PreTokenizerScratch()
            preScratch.classes.reserveCapacity(bytes.count + 1)
            preScratch.offsets.reserveCapacity(bytes.count + 2)
            var bpeScratch = BPEScratch()
            for piece in pieces {
                switch piece {
                case let .token(id):
                    output.append(id)
                case let .text(range):
                    if addPrefixSpace && bytes[range.lowerBound] != UInt8(ascii: " ") {
                        var prefixed: [UInt8] = [UInt8(ascii: " ")]
                        prefixed.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[range]))
                        prefixed.withUnsafeBufferPointer { prefixedBytes in
                            encodeText(prefixedBytes, 0..<prefixedBytes.count, &output, &preScratch, &bpeScratch)
                        }
                    } else {
                        encodeText(bytes, range, &output, &preScratch, &bpeScratch)
                    }
                }
            }
        }
        if addBOS && addsEosToken { output.append(eosTokenId) }
        return output
    }

    /// What `Blip2Processor(images=..., text=text)` puts in `input_ids`: the image token
    /// `imageTokenCount` times (the number of query tokens, 32), then BOS and the text.
    public func encode(_ text: String, imageTokenCount: Int) throws -> [Int] {
        guard let imageTokenId else { throw TokenizerError.noImageToken }
        return [Int](repeating: imageTokenId, count: max(0, imageTokenCount)) + encode(text, addBOS: true)
    }

    private func encodeText(
        _ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, _ output: inout [Int],
        _ preScratch: inout PreTokenizerScratch, _ bpeScratch: inout BPEScratch
    ) {
        PreTokenizer.split(bytes, range, scratch: &preScratch) { start, end in
            encodeWord(bytes, start, end, &output, &bpeScratch)
        }
    }

    @inline(__always)
    private func encodeWord(
        _ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int, _ output: inout [Int], _ scratch: inout BPEScratch
    ) {
        let cacheable = end - start <= WordCache.maximumKeyLength
        var hash: UInt64 = 0
        if cacheable {
            hash = WordCache.hash(bytes, start, end)
            if cache.lookup(bytes, start, end, hash: hash, into: &output) { return }
        }
        scratch.symbols.removeAll(keepingCapacity: true)
        for index in start..<end {
            let symbol = byteSymbols[Int(bytes[index])]
            if symbol >= 0 { scratch.symbols.append(symbol) }
        }
        BytePairMerger.merge(&scratch, table: merges)
        for symbol in scratch.symbols { output.append(Int(symbol)) }
        if cacheable {
            cache.insert(bytes, start, end, hash: hash, ids: scratch.symbols)
        }
    }

    // MARK: Decoding

    /// Text for `ids`, as `tokenizer.decode(ids, skip_special_tokens=...)`: ids the tokenizer does not
    /// know (the model's vocabulary is larger) are skipped, bytes are joined and decoded as UTF-8 with
    /// each invalid or incomplete sequence replaced by U+FFFD. Nothing is stripped (see `decodeStripped`).
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = true) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        for id in ids {
            appendBytes(of: id, skipSpecialTokens: skipSpecialTokens, to: &bytes)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The caption or answer text as the BLIP-2 examples produce it:
    /// `processor.batch_decode(ids, skip_special_tokens=True)[0].strip()`.
    public func decodeStripped(_ ids: [Int]) -> String {
        OPTTokenizer.stripPythonWhitespace(decode(ids, skipSpecialTokens: true))
    }

    /// Appends the bytes `id` decodes to; returns false when the id is skipped.
    @discardableResult
    func appendBytes(of id: Int, skipSpecialTokens: Bool, to bytes: inout [UInt8]) -> Bool {
        guard id >= 0, id < tokenForId.count, tokenForId[id] != nil else { return false }
        if skipSpecialTokens && specialIds[id] { return false }
        let start = Int(decodeOffsets[id])
        let end = Int(decodeOffsets[id + 1])
        decodeBytes.withUnsafeBufferPointer { all in
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: all[start..<end]))
        }
        return true
    }

    // MARK: Lookups

    /// The token text for an id (byte-level spelling, e.g. "Ġthe"), or nil when the id is unknown.
    public func token(for id: Int) -> String? {
        guard id >= 0, id < tokenForId.count else { return nil }
        return tokenForId[id]
    }

    /// The id of a token text (added tokens first, then the vocabulary), or nil. Compares bytes, so
    /// `"é"` and `"e\u{301}"` are different tokens, as they are to the reference.
    public func id(for token: String) -> Int? {
        lookup.id(of: token)
    }

    /// Whether `decode(_:skipSpecialTokens: true)` drops this id.
    public func isSpecial(_ id: Int) -> Bool {
        id >= 0 && id < specialIds.count && specialIds[id]
    }

    // MARK: Python's str.strip()

    /// `str.strip()` with no arguments: removes leading and trailing characters for which Python's
    /// `str.isspace()` is true (Unicode White_Space plus U+001C...U+001F), nothing else.
    public static func stripPythonWhitespace(_ text: String) -> String {
        let scalars = text.unicodeScalars
        guard let first = scalars.firstIndex(where: { !isPythonWhitespace($0) }),
              let last = scalars.lastIndex(where: { !isPythonWhitespace($0) }) else { return "" }
        return String(scalars[first...last])
    }

    static func isPythonWhitespace(_ scalar: Unicode.Scalar) -> Bool {
        ScalarClassifier.isWhiteSpace(scalar.value) || (0x1C...0x1F).contains(scalar.value)
    }
}
