import Blip2Core
import Foundation

// MARK: - T5's tokenizer files
//
// A T5 (BLIP-2 Flan-T5) checkpoint carries its tokenizer twice: `spiece.model` (the SentencePiece protobuf) and
// `tokenizer.json` (what `tokenizers` runs). We read `tokenizer.json` only. It holds everything `spiece.model`
// does that encoding needs (the pieces and scores, unk_id, byte_fallback, and the normalizer's
// precompiled_charsmap copied verbatim from the protobuf) plus what transformers adds around it (the 100
// `<extra_id_N>` tokens, T5's pre-tokenizer, `</s>` after the text, the decoder), so one reader gives the
// reference's behaviour without rebuilding that pipeline from T5Tokenizer's Python source, and the hub's
// BLIP-2 Flan-T5 folders all ship it. A folder with only `spiece.model` is refused with a message saying so.

/// What a model file stores to rebuild a `T5Tokenizer`: `tokenizer.json` verbatim, the special-token names
/// from `tokenizer_config.json`, and the image token `Blip2Processor` adds.
public struct T5TokenizerData: Codable, Sendable, Equatable {
    /// The `tokenizer.json` text, exactly as the checkpoint has it.
    public var tokenizerJSON: String
    public var eosToken: String
    public var padToken: String?
    public var unkToken: String?
    /// The token the processor repeats for the query embeddings (`<image>`), when it is not in tokenizer.json.
    public var imageToken: String?
    /// Where the image token goes (the model's `image_token_index`); nil: the next id after everything else,
    /// which is where `Blip2Processor` puts it.
    public var imageTokenId: Int?

    public init(
        tokenizerJSON: String, eosToken: String = "</s>", padToken: String? = "<pad>", unkToken: String? = "<unk>",
        imageToken: String? = nil, imageTokenId: Int? = nil
    ) {
        self.tokenizerJSON = tokenizerJSON
        self.eosToken = eosToken
        self.padToken = padToken
        self.unkToken = unkToken
        self.imageToken = imageToken
        self.imageTokenId = imageTokenId
    }

    enum CodingKeys: String, CodingKey {
        case tokenizerJSON = "tokenizer_json"
        case eosToken = "eos_token"
        case padToken = "pad_token"
        case unkToken = "unk_token"
        case imageToken = "image_token"
        case imageTokenId = "image_token_id"
    }

    /// Reads `tokenizer.json` and, when present, `tokenizer_config.json` (for the eos, pad and unk names;
    /// T5Tokenizer's defaults `</s>`, `<pad>`, `<unk>` otherwise), and names `<image>` as the image token the way
    /// `Blip2Processor` adds it: special, matched before normalization, at `imageTokenIndex` or the next free id.
    ///
    /// - Throws: `TokenizerError` naming the file and the problem. The JSON itself is checked by `T5Tokenizer.init`.
    public static func load(huggingFaceFolder folder: URL, imageTokenIndex: Int? = nil) throws -> T5TokenizerData {
        guard let data = try TokenizerData.readOptionalFile("tokenizer.json", in: folder) else {
            if FileManager.default.fileExists(atPath: folder.appendingPathComponent("spiece.model").path) {
                throw TokenizerError.missingFile(
                    name: "tokenizer.json (spiece.model alone is not read; save the tokenizer once with transformers to write it)",
                    folder: folder.path)
            }
            throw TokenizerError.missingFile(name: "tokenizer.json", folder: folder.path)
        }
        guard let text = String(validatingUTF8Bytes: [UInt8](data)) else {
            throw TokenizerError.unreadableFile(name: "tokenizer.json", reason: "not valid UTF-8")
        }
        var result = T5TokenizerData(tokenizerJSON: text, imageToken: "<image>", imageTokenId: imageTokenIndex)
        if let configData = try TokenizerData.readOptionalFile("tokenizer_config.json", in: folder) {
            let config = try TokenizerData.jsonObject(configData, fileName: "tokenizer_config.json")
            func name(_ key: String) -> String? {
                if let plain = config[key] as? String { return plain }
                return (config[key] as? [String: Any])?["content"] as? String
            }
            if let eos = name("eos_token") { result.eosToken = eos }
            if config.keys.contains("pad_token") { result.padToken = name("pad_token") }
            if config.keys.contains("unk_token") { result.unkToken = name("unk_token") }
        }
        return result
    }
}

// MARK: - Reading tokenizer.json

/// The parts of a `tokenizer.json` a SentencePiece Unigram tokenizer uses, checked.
struct UnigramTokenizerSpec {
    var model: UnigramModel
    var addedTokens: [AddedToken]
    var normalizer: TextNormalizer?
    var preTokenizer: TextPreTokenizer?
    var template: SingleSequenceTemplate
    var decoder: TokenDecoder?

    /// Nested `Sequence`s deeper than this are refused (the reference has no such files; a hostile one could
    /// otherwise recurse without bound).
    static let maximumNesting = 8

    init(json text: String) throws {
        let root = try TokenizerData.jsonObject(Data(text.utf8), fileName: "tokenizer.json")
        guard let model = root["model"] as? [String: Any] else {
            throw Self.failure("there is no \"model\" object")
        }
        guard let type = model["type"] as? String, type == "Unigram" else {
            throw Self.failure("model type \(String(describing: model["type"] ?? "missing")) is not supported: only SentencePiece Unigram (T5) is")
        }
        guard let vocab = model["vocab"] as? [Any] else {
            throw Self.failure("the Unigram \"vocab\" is not a list of [piece, score] pairs")
        }
        guard vocab.count < TokenizerLimits.maximumTokenId else {
            throw Self.failure("the Unigram vocabulary has \(vocab.count) pieces; at most \(TokenizerLimits.maximumTokenId) are allowed")
        }
        var pieces: [String] = []
        var scores: [Double] = []
        pieces.reserveCapacity(vocab.count)
        scores.reserveCapacity(vocab.count)
        for (index, entry) in vocab.enumerated() {
            guard let pair = entry as? [Any], pair.count == 2, let piece = pair[0] as? String,
                  let score = Self.number(pair[1]) else {
                throw Self.failure("Unigram vocab entry \(index) is not a [piece, score] pair")
            }
            pieces.append(piece)
            scores.append(score)
        }
        guard let unknownId = Self.integer(model["unk_id"]) else {
            throw Self.failure("the Unigram model has no integer \"unk_id\"; it is needed for characters no piece covers")
        }
        let byteFallback = try Self.bool(model["byte_fallback"], "byte_fallback") ?? false
        self.model = try UnigramModel(pieces: pieces, scores: scores, unknownId: unknownId, byteFallback: byteFallback)

        addedTokens = try Self.addedTokens(root["added_tokens"])
        normalizer = try Self.optional(root["normalizer"]) { try Self.normalizer($0, depth: 0) }
        preTokenizer = try Self.optional(root["pre_tokenizer"]) { try Self.preTokenizer($0, depth: 0) }
        decoder = try Self.optional(root["decoder"]) { try Self.decoder($0, depth: 0) }
        template = try Self.optional(root["post_processor"]) { try Self.template($0) } ?? .none
        for key in ["truncation", "padding"] where !Self.isNull(root[key]) {
            throw Self.failure("\"\(key)\" is set; tokenizers that truncate or pad are not supported (BLIP-2 encodes one prompt at a time)")
        }
    }

    // MARK: Steps

    private static func normalizer(_ json: [String: Any], depth: Int) throws -> TextNormalizer {
        switch try kind(json, "normalizer") {
        case "Precompiled":
            guard let encoded = json["precompiled_charsmap"] as? String else {
                throw failure("the Precompiled normalizer has no precompiled_charsmap string")
            }
            guard let blob = Data(base64Encoded: encoded) else {
                throw failure("the Precompiled normalizer's precompiled_charsmap is not valid base64")
            }
            return .precompiled(try PrecompiledCharsmap(blob: [UInt8](blob)))
        case "Strip":
            return .strip(left: try bool(json["strip_left"], "strip_left") ?? false,
                          right: try bool(json["strip_right"], "strip_right") ?? false)
        case "Replace":
            let (pattern, content) = try replacement(json, "normalizer")
            return .replace(pattern: pattern, content: content)
        case "Sequence":
            return .sequence(try list(json["normalizers"], "normalizers", depth: depth) { try normalizer($0, depth: depth + 1) })
        case let other:
            throw failure("normalizer \(other.debugDescription) is not supported (Precompiled, Strip, Replace and Sequence are)")
        }
    }

    private static func preTokenizer(_ json: [String: Any], depth: Int) throws -> TextPreTokenizer {
        switch try kind(json, "pre_tokenizer") {
        case "WhitespaceSplit":
            return .whitespaceSplit
        case "Metaspace":
            return .metaspace(replacement: try scalar(json["replacement"], "Metaspace replacement"),
                              prepend: try prependsPrefix(json), split: try bool(json["split"], "split") ?? true)
        case "Sequence":
            return .sequence(try list(json["pretokenizers"], "pretokenizers", depth: depth) { try preTokenizer($0, depth: depth + 1) })
        case let other:
            throw failure("pre_tokenizer \(other.debugDescription) is not supported (WhitespaceSplit, Metaspace and Sequence are)")
        }
    }

    private static func decoder(_ json: [String: Any], depth: Int) throws -> TokenDecoder {
        switch try kind(json, "decoder") {
        case "Metaspace":
            return .metaspace(replacement: try scalar(json["replacement"], "Metaspace replacement"), dropInFirstToken: try prependsPrefix(json))
        case "Replace":
            let (pattern, content) = try replacement(json, "decoder")
            return .replace(pattern: pattern, content: content)
        case "ByteFallback":
            return .byteFallback
        case "Fuse":
            return .fuse
        case "Strip":
            guard let start = integer(json["start"]), let stop = integer(json["stop"]) else {
                throw failure("the Strip decoder needs integer start and stop")
            }
            return .strip(content: try scalar(json["content"], "Strip content"), start: start, stop: stop)
        case "Sequence":
            return .sequence(try list(json["decoders"], "decoders", depth: depth) { try decoder($0, depth: depth + 1) })
        case let other:
            throw failure("decoder \(other.debugDescription) is not supported (Metaspace, Replace, ByteFallback, Fuse, Strip and Sequence are)")
        }
    }

    /// `TemplateProcessing`'s single-sequence template; the pair template is never used.
    private static func template(_ json: [String: Any]) throws -> SingleSequenceTemplate {
        guard try kind(json, "post_processor") == "TemplateProcessing" else {
            throw failure("post_processor \(String(describing: json["type"] ?? "")) is not supported (TemplateProcessing is)")
        }
        guard let single = json["single"] as? [Any] else {
            throw failure("TemplateProcessing has no \"single\" template list")
        }
        let specials = json["special_tokens"] as? [String: Any] ?? [:]
        var parts: [SingleSequenceTemplate.Part] = []
        for item in single {
            guard let entry = item as? [String: Any], entry.count == 1 else {
                throw failure("a TemplateProcessing entry is not {\"Sequence\": ...} or {\"SpecialToken\": ...}")
            }
            if let sequence = entry["Sequence"] as? [String: Any] {
                guard sequence["id"] as? String == "A" else {
                    throw failure("the single-sequence template refers to sequence \(String(describing: sequence["id"] ?? "")); only A exists")
                }
                parts.append(.sequence)
            } else if let special = entry["SpecialToken"] as? [String: Any], let name = special["id"] as? String {
                guard let token = specials[name] as? [String: Any], let ids = token["ids"] as? [Any] else {
                    throw failure("the template's special token \(name.debugDescription) is not in special_tokens")
                }
                parts.append(.special(try ids.map { value in
                    guard let id = integer(value), id >= 0, id < TokenizerLimits.maximumTokenId else {
                        throw failure("special token \(name.debugDescription) has an invalid id")
                    }
                    return id
                }))
            } else {
                throw failure("a TemplateProcessing entry is not {\"Sequence\": ...} or {\"SpecialToken\": ...}")
            }
        }
        return SingleSequenceTemplate(parts: parts)
    }

    private static func addedTokens(_ json: Any?) throws -> [AddedToken] {
        if isNull(json) { return [] }
        guard let list = json as? [Any] else { throw failure("\"added_tokens\" is not a list") }
        return try list.enumerated().map { index, item in
            guard let entry = item as? [String: Any], let id = integer(entry["id"]), let content = entry["content"] as? String else {
                throw failure("added_tokens entry \(index) has no integer id and string content")
            }
            guard id >= 0, id < TokenizerLimits.maximumTokenId else {
                throw TokenizerError.invalidTokenId(token: content, id: id)
            }
            return AddedToken(
                id: id, content: content, special: try bool(entry["special"], "special") ?? false,
                lstrip: try bool(entry["lstrip"], "lstrip") ?? false, rstrip: try bool(entry["rstrip"], "rstrip") ?? false,
                normalized: try bool(entry["normalized"], "normalized") ?? true,
                singleWord: try bool(entry["single_word"], "single_word") ?? false)
        }
    }

    // MARK: Field helpers

    static func failure(_ reason: String) -> TokenizerError {
        .malformedJSON(name: "tokenizer.json", reason: reason)
    }

    private static func isNull(_ value: Any?) -> Bool {
        value == nil || value is NSNull
    }

    private static func optional<T>(_ value: Any?, _ build: ([String: Any]) throws -> T) throws -> T? {
        if isNull(value) { return nil }
        guard let object = value as? [String: Any] else { throw failure("a pipeline step is not a JSON object") }
        return try build(object)
    }

    private static func kind(_ json: [String: Any], _ role: String) throws -> String {
        guard let type = json["type"] as? String else { throw failure("a \(role) has no \"type\"") }
        return type
    }

    private static func list<T>(_ value: Any?, _ key: String, depth: Int, _ build: ([String: Any]) throws -> T) throws -> [T] {
        guard depth < maximumNesting else { throw failure("Sequence steps are nested more than \(maximumNesting) deep") }
        guard let items = value as? [Any] else { throw failure("a Sequence has no \"\(key)\" list") }
        return try items.map { item in
            guard let object = item as? [String: Any] else { throw failure("an entry of \"\(key)\" is not a JSON object") }
            return try build(object)
        }
    }

    /// A Replace step's literal pattern; regular expressions are refused (T5's files have none).
    private static func replacement(_ json: [String: Any], _ role: String) throws -> (String, String) {
        guard let pattern = json["pattern"] as? [String: Any], let content = json["content"] as? String else {
            throw failure("a Replace \(role) needs a pattern and a content string")
        }
        if let literal = pattern["String"] as? String { return (literal, content) }
        if pattern["Regex"] != nil {
            throw failure("a Replace \(role) with a regular expression is not supported (literal String patterns are)")
        }
        throw failure("a Replace \(role)'s pattern is neither {\"String\": ...} nor {\"Regex\": ...}")
    }

    /// Metaspace's `prepend_scheme` (`always`/`never`), or the older `add_prefix_space` flag it replaced.
    private static func prependsPrefix(_ json: [String: Any]) throws -> Bool {
        if let scheme = json["prepend_scheme"] as? String {
            switch scheme {
            case "always": return true
            case "never": return false
            case "first":
                throw failure("Metaspace prepend_scheme \"first\" is not supported (T5 uses \"always\")")
            default:
                throw failure("Metaspace prepend_scheme \(scheme.debugDescription) is not always, first or never")
            }
        }
        return try bool(json["add_prefix_space"], "add_prefix_space") ?? true
    }

    private static func scalar(_ value: Any?, _ what: String) throws -> Unicode.Scalar {
        guard let text = value as? String, text.unicodeScalars.count == 1, let scalar = text.unicodeScalars.first else {
            throw failure("\(what) must be a single character")
        }
        return scalar
    }

    private static func bool(_ value: Any?, _ key: String) throws -> Bool? {
        if isNull(value) { return nil }
        guard let flag = value as? Bool else { throw failure("\"\(key)\" is not true or false") }
        return flag
    }

    /// A JSON number as Double (JSONSerialization may hand back an integer for `0`).
    private static func number(_ value: Any?) -> Double? {
        (value as? NSNumber)?.doubleValue
    }

    /// A JSON integer that fits comfortably in Int, or nil (never traps on 1e300 or 2.5).
    static func integer(_ value: Any?) -> Int? {
        guard let number = value as? NSNumber else { return nil }
        let double = number.doubleValue
        guard double.isFinite, double == double.rounded(), abs(double) < 9e15 else { return nil }
        return Int(double)
    }
}
