import Foundation

// MARK: - Serializable tokenizer description

/// A token matched in text before BPE (Hugging Face "added token"), with its matching options.
public struct AddedToken: Codable, Sendable, Equatable {
    public var id: Int
    public var content: String
    /// Special tokens are skipped by `decode(_:skipSpecialTokens: true)`.
    public var special: Bool
    /// Swallow whitespace to the left of the token.
    public var lstrip: Bool
    /// Swallow whitespace to the right of the token.
    public var rstrip: Bool
    /// Matched after normalization (OPT has no normalizer: only the matching order differs).
    public var normalized: Bool
    /// Only match when not glued to word characters on either side.
    public var singleWord: Bool

    public init(
        id: Int, content: String, special: Bool, lstrip: Bool = false, rstrip: Bool = false,
        normalized: Bool, singleWord: Bool = false
    ) {
        self.id = id
        self.content = content
        self.special = special
        self.lstrip = lstrip
        self.rstrip = rstrip
        self.normalized = normalized
        self.singleWord = singleWord
    }

    enum CodingKeys: String, CodingKey {
        case id, content, special, lstrip, rstrip, normalized
        case singleWord = "single_word"
    }
}

/// Everything needed to rebuild the tokenizer; stored inside model files as JSON (Codable, snake_case keys).
///
/// In JSON, `vocab` is written as an array of tokens indexed by id (`null` for unused ids): decoding
/// an array is about three times faster than decoding a 50k-entry object with `JSONDecoder`, which
/// matters when a model starts on a small board. Decoding accepts that array or a `vocab.json`-style
/// object.
public struct TokenizerData: Codable, Sendable, Equatable {
    /// Byte-level token -> id (`vocab.json`).
    public var vocab: [String: Int]
    /// "a b" pairs, in rank order, no header (`merges.txt`).
    public var merges: [String]
    /// Tokens matched in text before BPE, with their final ids.
    public var addedTokens: [AddedToken]
    public var bosToken: String?
    public var eosToken: String?
    public var padToken: String?
    public var unkToken: String?
    /// Prepend the BOS token when encoding with special tokens (OPT: true).
    public var addBosToken: Bool
    /// Append the EOS token when encoding with special tokens (OPT: false).
    public var addEosToken: Bool
    /// The token the processor repeats for the query embeddings (BLIP-2: "<image>").
    public var imageToken: String?
    /// GPT-2's `add_prefix_space` (OPT: false): a space is put before each text piece that lacks one.
    public var addPrefixSpace: Bool

    public init(
        vocab: [String: Int], merges: [String], addedTokens: [AddedToken],
        bosToken: String?, eosToken: String?, padToken: String?, unkToken: String?,
        addBosToken: Bool, imageToken: String?, addPrefixSpace: Bool = false, addEosToken: Bool = false
    ) {
        self.vocab = vocab
        self.merges = merges
        self.addedTokens = addedTokens
        self.bosToken = bosToken
        self.eosToken = eosToken
        self.padToken = padToken
        self.unkToken = unkToken
        self.addBosToken = addBosToken
        self.addEosToken = addEosToken
        self.imageToken = imageToken
        self.addPrefixSpace = addPrefixSpace
    }

    enum CodingKeys: String, CodingKey {
        case vocab, merges
        case addedTokens = "added_tokens"
        case bosToken = "bos_token"
        case eosToken = "eos_token"
        case padToken = "pad_token"
        case unkToken = "unk_token"
        case addBosToken = "add_bos_token"
        case addEosToken = "add_eos_token"
        case imageToken = "image_token"
        case addPrefixSpace = "add_prefix_space"
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        if let tokensById = try? container.decode([String?].self, forKey: .vocab) {
            var vocab = [String: Int](minimumCapacity: tokensById.count)
            for (id, token) in tokensById.enumerated() {
                guard let token else { continue }
                if let earlier = vocab.updateValue(id, forKey: token) {
                    throw DecodingError.dataCorruptedError(
                        forKey: .vocab, in: container,
                        debugDescription: "token \(token.debugDescription) appears at ids \(earlier) and \(id)")
                }
            }
            self.vocab = vocab
        } else {
            vocab = try container.decode([String: Int].self, forKey: .vocab)
        }
        merges = try container.decode([String].self, forKey: .merges)
        addedTokens = try container.decodeIfPresent([AddedToken].self, forKey: .addedTokens) ?? []
        bosToken = try container.decodeIfPresent(String.self, forKey: .bosToken)
        eosToken = try container.decodeIfPresent(String.self, forKey: .eosToken)
        padToken = try container.decodeIfPresent(String.self, forKey: .padToken)
        unkToken = try container.decodeIfPresent(String.self, forKey: .unkToken)
        addBosToken = try container.decodeIfPresent(Bool.self, forKey: .addBosToken) ?? false
        addEosToken = try container.decodeIfPresent(Bool.self, forKey: .addEosToken) ?? false
        imageToken = try container.decodeIfPresent(String.self, forKey: .imageToken)
        addPrefixSpace = try container.decodeIfPresent(Bool.self, forKey: .addPrefixSpace) ?? false
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        let highest = vocab.values.max() ?? -1
        guard vocab.values.allSatisfy({ $0 >= 0 }), highest < TokenizerLimits.maximumTokenId else {
            throw EncodingError.invalidValue(vocab, .init(
                codingPath: container.codingPath + [CodingKeys.vocab],
                debugDescription: "vocabulary ids must be in 0..<\(TokenizerLimits.maximumTokenId)"))
        }
        var tokensById = [String?](repeating: nil, count: highest + 1)
        for (token, id) in vocab {
            guard tokensById[id] == nil else {
                throw EncodingError.invalidValue(vocab, .init(
                    codingPath: container.codingPath + [CodingKeys.vocab], debugDescription: "two tokens share id \(id)"))
            }
            tokensById[id] = token
        }
        try container.encode(tokensById, forKey: .vocab)
        try container.encode(merges, forKey: .merges)
        try container.encode(addedTokens, forKey: .addedTokens)
        try container.encodeIfPresent(bosToken, forKey: .bosToken)
        try container.encodeIfPresent(eosToken, forKey: .eosToken)
        try container.encodeIfPresent(padToken, forKey: .padToken)
        try container.encodeIfPresent(unkToken, forKey: .unkToken)
        try container.encode(addBosToken, forKey: .addBosToken)
        try container.encode(addEosToken, forKey: .addEosToken)
        try container.encodeIfPresent(imageToken, forKey: .imageToken)
        try container.encode(addPrefixSpace, forKey: .addPrefixSpace)
    }
}
