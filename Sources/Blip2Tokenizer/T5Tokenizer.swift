import Foundation

// MARK: - The tokenizer
//
// Encoding, as `tokenizers` 0.23 runs a SentencePiece Unigram tokenizer.json (and transformers 5's
// T5Tokenizer, which builds the same pipeline):
//   1. added tokens with `normalized: false` (T5: `<pad>`, `</s>`, `<unk>`, `<extra_id_0>`...`<extra_id_99>`)
//      are cut out of the raw text;
//   2. each remaining piece is normalized on its own (T5: the Precompiled charsmap), then added tokens with
//      `normalized: true` are cut out of the normalized text;
//   3. the pre-tokenizer splits what is left into words (T5: on whitespace, then `▁` in front of each word);
//   4. each word is segmented by the Unigram model (UnigramModel.swift);
//   5. the post-processor's template adds its special tokens (T5: `</s>` after the text).
// Decoding maps ids to pieces (dropping special tokens when asked and ids it does not know), runs the
// decoder steps over the pieces (T5: `▁` becomes a space, dropped in the first piece) and joins them.

/// T5's SentencePiece Unigram tokenizer, read from its `tokenizer.json`.
///
/// Immutable after `init`, so one instance can be shared by any number of threads.
public final class T5Tokenizer: TextTokenizer {
    /// Number of distinct ids, pieces plus added tokens outside them (`len(tokenizer)` in Python: 32100 for Flan-T5).
    public let vocabularySize: Int
    public let eosTokenId: Int
    public let padTokenId: Int?
    public let unkTokenId: Int?
    /// Id of the token `Blip2Processor` repeats for the query embeddings, when the data names one.
    public let imageTokenId: Int?
    /// The added tokens, sorted by id (the image token included).
    public let addedTokens: [AddedToken]

    private let model: UnigramModel
    private let normalizer: TextNormalizer?
    private let preTokenizer: TextPreTokenizer?
    private let template: SingleSequenceTemplate
    private let decoder: TokenDecoder?
    private let splitter: AddedTokenSplitter
    private let tokenForId: [String?]
    private let specialIds: [Bool]
    /// Added tokens by content (they win over pieces spelled the same, as in the reference).
    private let addedIds: [String: Int]

    /// Builds the tokenizer from `tokenizer.json`, validating everything it says.
    ///
    /// - Throws: `TokenizerError` for JSON that is not a SentencePiece Unigram tokenizer, steps the reference
    ///   would run differently from us (named in the message), invalid ids, or special tokens that name nothing.
    public init(_ data: T5TokenizerData) throws {
        let spec = try UnigramTokenizerSpec(json: data.tokenizerJSON)
        model = spec.model
        normalizer = spec.normalizer
        preTokenizer = spec.preTokenizer
        template = spec.template
        decoder = spec.decoder

        var declared = spec.addedTokens
        var imageId: Int?
        if let image = data.imageToken {
            let existing = declared.first { $0.content == image }?.id ?? spec.model.id(of: image)
            if let existing {
                imageId = existing
            } else {
                let next = max(spec.model.pieces.count, (declared.map(\.id).max() ?? -1) + 1)
                let id = data.imageTokenId ?? next
                guard id >= 0, id < TokenizerLimits.maximumTokenId else {
                    throw TokenizerError.invalidTokenId(token: image, id: id)
                }
                if let other = declared.first(where: { $0.id == id })?.content ?? (id < spec.model.pieces.count ? spec.model.pieces[id] : nil) {
                    throw TokenizerError.imageTokenConflict("id \(id) already belongs to \(other.debugDescription)")
                }
                declared.append(AddedToken(id: id, content: image, special: true, normalized: false))
                imageId = id
            }
            if let wanted = data.imageTokenId, imageId != wanted {
                throw TokenizerError.imageTokenConflict(
                    "the tokenizer files put \(image.debugDescription) at id \(imageId ?? -1) but the model expects \(wanted); use the tokenizer that came with the model")
            }
        }
        imageTokenId = imageId

        var seenIds: [Int: String] = [:]
        var added: [String: Int] = [:]
        for token in declared {
            if let other = seenIds[token.id], other != token.content {
                throw TokenizerError.duplicateTokenId(id: token.id, first: other, second: token.content)
            }
            seenIds[token.id] = token.content
            if !token.content.isEmpty { added[token.content] = token.id }
        }
        addedIds = added
        addedTokens = declared.sorted { $0.id < $1.id }

        let highest = max(model.pieces.count - 1, declared.map(\.id).max() ?? -1)
        var tokens = [String?](repeating: nil, count: highest + 1)
        for (id, piece) in model.pieces.enumerated() { tokens[id] = piece }
        for token in declared where !token.content.isEmpty { tokens[token.id] = token.content }
        tokenForId = tokens
        vocabularySize = tokens.lazy.filter { $0 != nil }.count

        var special = [Bool](repeating: false, count: tokens.count)
        let specialContents = Set(declared.filter { $0.special && !$0.content.isEmpty }.map(\.content))
        for (id, token) in tokens.enumerated() where token.map(specialContents.contains) == true { special[id] = true }
        specialIds = special

        // Tokens matched after normalization are looked for in their normalized spelling, as the reference does.
        let normalizer = spec.normalizer
        splitter = AddedTokenSplitter(tokens: declared.map { token in
            guard token.normalized, let normalizer else { return token }
            var copy = token
            copy.content = normalizer.apply(token.content)
            return copy
        })

        func resolve(_ role: String, _ token: String?) throws -> Int? {
            guard let token else { return nil }
            guard let id = added[token] ?? spec.model.id(of: token) else {
                throw TokenizerError.missingSpecialToken(role: role, token: token)
            }
            return id
        }
        guard let eos = try resolve("eos", data.eosToken) else {
            throw TokenizerError.missingSpecialToken(role: "eos", token: nil)
        }
        eosTokenId = eos
        padTokenId = try resolve("pad", data.padToken)
        unkTokenId = try resolve("unk", data.unkToken)
    }

    // MARK: Encoding

    /// Token ids for `text`, as `tokenizer(text)["input_ids"]` (T5: the text's ids then `</s>`), or without the
    /// template's special tokens when `addSpecialTokens` is false.
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        var output: [Int] = []
        output.reserveCapacity(text.utf8.count / 2 + 2)
        var rawPieces: [AddedTokenSplitter.Piece] = []
        var normalizedPieces: [AddedTokenSplitter.Piece] = []
        var text = text
        text.withUTF8 { bytes in
            splitter.split(bytes, pass: .raw, into: &rawPieces)
            for piece in rawPieces {
                switch piece {
                case let .token(id):
                    output.append(id)
                case let .text(range):
                    let original = String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
                    var normalized = normalizer?.apply(original) ?? original
                    normalized.withUTF8 { normalizedBytes in
                        splitter.split(normalizedBytes, pass: .normalized, into: &normalizedPieces)
                        for piece in normalizedPieces {
                            switch piece {
                            case let .token(id):
                                output.append(id)
                            case let .text(range):
                                encodeWords(String(decoding: UnsafeBufferPointer(rebasing: normalizedBytes[range]), as: UTF8.self), &output)
                            }
                        }
                    }
                }
            }
        }
        return addSpecialTokens ? template.apply(output) : output
    }

    /// What `Blip2Processor(images=..., text=text)` puts in `input_ids` for BLIP-2 Flan-T5: the image token
    /// `imageTokenCount` times (the number of query tokens), then the text's ids and `</s>`.
    public func encode(_ text: String, imageTokenCount: Int) throws -> [Int] {
        guard let imageTokenId else { throw TokenizerError.noImageToken }
        return [Int](repeating: imageTokenId, count: max(0, imageTokenCount)) + encode(text, addSpecialTokens: true)
    }

    private func encodeWords(_ text: String, _ output: inout [Int]) {
        let words = preTokenizer?.apply([text]) ?? [text]
        for var word in words {
            word.withUTF8 { model.encode($0, into: &output) }
        }
    }

    // MARK: Decoding

    /// Text for `ids`, as `tokenizer.decode(ids, skip_special_tokens=...)`: ids the tokenizer does not know
    /// (the model's vocabulary may be larger) are skipped.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = true) -> String {
        var tokens: [String] = []
        tokens.reserveCapacity(ids.count)
        for id in ids {
            guard id >= 0, id < tokenForId.count, let token = tokenForId[id] else { continue }
            if skipSpecialTokens && specialIds[id] { continue }
            tokens.append(token)
        }
        guard let decoder else { return tokens.joined(separator: " ") }
        return decoder.apply(tokens).joined()
    }

    // MARK: Lookups

    /// The piece or added token for an id (e.g. "▁the", "<extra_id_0>"), or nil when the id is unknown.
    public func token(for id: Int) -> String? {
        guard id >= 0, id < tokenForId.count else { return nil }
        return tokenForId[id]
    }

    /// The id of a piece or added token (added tokens first), or nil.
    public func id(for token: String) -> Int? {
        addedIds[token] ?? model.id(of: token)
    }

    /// Whether `decode(_:skipSpecialTokens: true)` drops this id.
    public func isSpecial(_ id: Int) -> Bool {
        id >= 0 && id < specialIds.count && specialIds[id]
    }
}
