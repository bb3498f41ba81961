// MARK: - Errors

/// Everything that can go wrong while reading tokenizer files or building a tokenizer.
///
/// Each message says what is wrong and what to do about it; none of these is ever a crash.
public enum TokenizerError: Error, CustomStringConvertible, Equatable, Sendable {
    /// A required file is not in the folder.
    case missingFile(name: String, folder: String)
    /// The file exists but could not be read, or is not valid UTF-8.
    case unreadableFile(name: String, reason: String)
    /// The file is not the JSON shape we expect.
    case malformedJSON(name: String, reason: String)
    /// A line of `merges.txt` is not two symbols separated by one space (line numbers start at 1).
    case badMergeLine(line: Int, text: String)
    /// A merge names a symbol (or produces a token) that `vocab.json` does not contain.
    case mergeSymbolNotInVocabulary(rank: Int, merge: String, symbol: String)
    /// A token id is negative or absurdly large.
    case invalidTokenId(token: String, id: Int)
    /// Two different tokens share one id.
    case duplicateTokenId(id: Int, first: String, second: String)
    /// `tokenizer_config.json` names a tokenizer class this byte-level BPE does not implement.
    case unsupportedTokenizerClass(String)
    /// A required special token is not set, or is neither in the vocabulary nor an added token.
    case missingSpecialToken(role: String, token: String?)
    /// The image token cannot be placed where the model expects it.
    case imageTokenConflict(String)
    /// The tokenizer has no image token but one was needed.
    case noImageToken

    public var description: String {
        switch self {
        case let .missingFile(name, folder):
            return "missing \(name) in \(folder): point to a Hugging Face tokenizer folder that has vocab.json, merges.txt and tokenizer_config.json"
        case let .unreadableFile(name, reason):
            return "cannot read \(name): \(reason)"
        case let .malformedJSON(name, reason):
            return "\(name) is not valid tokenizer JSON: \(reason); re-download or re-export the tokenizer"
        case let .badMergeLine(line, text):
            return "merges.txt line \(line) must be two symbols separated by a single space, found \(text.debugDescription)"
        case let .mergeSymbolNotInVocabulary(rank, merge, symbol):
            return "merge #\(rank) \(merge.debugDescription) uses \(symbol.debugDescription), which vocab.json lacks; vocab.json and merges.txt do not belong together"
        case let .invalidTokenId(token, id):
            return "token \(token.debugDescription) has id \(id); ids must be in 0..<\(TokenizerLimits.maximumTokenId)"
        case let .duplicateTokenId(id, first, second):
            return "tokens \(first.debugDescription) and \(second.debugDescription) both have id \(id); every id must name one token"
        case let .unsupportedTokenizerClass(name):
            return "tokenizer_class \(name.debugDescription) is not supported: only GPT-2 byte-level BPE (GPT2Tokenizer, as used by OPT and BLIP-2-OPT) is"
        case let .missingSpecialToken(role, token):
            if let token {
                return "\(role) token \(token.debugDescription) is neither in the vocabulary nor an added token"
            }
            return "no \(role) token is configured; set \(role)_token in tokenizer_config.json"
        case let .imageTokenConflict(reason):
            return "image token: \(reason)"
        case .noImageToken:
            return "this tokenizer has no image token; load it with an image token index (BLIP-2 uses <image>)"
        }
    }
}

enum TokenizerLimits {
    /// Ids index flat tables, so a hostile file must not make us allocate for id 2^60.
    static let maximumTokenId = 1 << 24
}
