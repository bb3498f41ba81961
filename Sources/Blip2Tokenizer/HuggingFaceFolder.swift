import Blip2Core
import Foundation

// MARK: - Reading a Hugging Face tokenizer folder
//
// Mirrors what `transformers` 5.x does for a `GPT2Tokenizer` folder (vocab.json + merges.txt +
// tokenizer_config.json, optionally special_tokens_map.json and added_tokens.json), followed by
// `Blip2Processor` adding its image token. Which file wins, which tokens become special and which
// id each added token gets all follow the reference; `Tests/Fixtures/tokenizer/tiny_folders.json`
// records the reference's answers for folders that exercise each rule.

extension TokenizerData {
    /// Reads a Hugging Face tokenizer folder: vocab.json, merges.txt, tokenizer_config.json (incl. added_tokens_decoder),
    /// special_tokens_map.json and added_tokens.json where present. Adds `<image>` at `imageTokenIndex` when the files lack it.
    ///
    /// - Parameter imageTokenIndex: the model's `image_token_index`. When nil, the image token is added at the next free
    ///   id, as `Blip2Processor` does. When given, the image token must end up at exactly that id, or loading fails.
    /// - Throws: `TokenizerError` naming the file and the problem.
    public static func load(huggingFaceFolder folder: URL, imageTokenIndex: Int?) throws -> TokenizerData {
        let vocabData = try readFile("vocab.json", in: folder)
        let mergesData = try readFile("merges.txt", in: folder)
        let configData = try readFile("tokenizer_config.json", in: folder)
        let specialMapData = try readOptionalFile("special_tokens_map.json", in: folder)
        let addedTokensData = try readOptionalFile("added_tokens.json", in: folder)

        let vocab = try VocabularyJSON.parse(vocabData, fileName: "vocab.json")
        let merges = try parseMerges(mergesData)
        try validateVocabulary(vocab)
        try validateMerges(merges, vocab: vocab)

        let config = try jsonObject(configData, fileName: "tokenizer_config.json")
        let specialMap = try specialMapData.map { try jsonObject($0, fileName: "special_tokens_map.json") }
        let addedTokensFile = try addedTokensData.map { try jsonObject($0, fileName: "added_tokens.json") }

        if let className = config["tokenizer_class"] as? String,
           !["GPT2Tokenizer", "GPT2TokenizerFast"].contains(className) {
            throw TokenizerError.unsupportedTokenizerClass(className)
        }

        var resolver = AddedTokenResolver(vocab: vocab)
        let special = try resolver.resolve(config: config, specialMap: specialMap, addedTokensFile: addedTokensFile)
        let imageToken = try resolver.addImageToken(named: special.imageToken, at: imageTokenIndex)

        return TokenizerData(
            vocab: vocab,
            merges: merges,
            addedTokens: resolver.finalTokens(),
            bosToken: special.named["bos_token"],
            eosToken: special.named["eos_token"],
            padToken: special.named["pad_token"],
            unkToken: special.named["unk_token"],
            addBosToken: (config["add_bos_token"] as? Bool) ?? false,
            imageToken: imageToken,
            addPrefixSpace: (config["add_prefix_space"] as? Bool) ?? false,
            addEosToken: (config["add_eos_token"] as? Bool) ?? false
        )
    }

    // MARK: Files

    /// Largest tokenizer file read: OPT's vocab.json is 0.9 MB, merges.txt 0.4 MB.
    static let maxFileBytes = 256 << 20

    static func readFile(_ name: String, in folder: URL) throws -> Data {
        guard let data = try readOptionalFile(name, in: folder) else {
            throw TokenizerError.missingFile(name: name, folder: folder.path)
        }
        return data
    }

    static func readOptionalFile(_ name: String, in folder: URL) throws -> Data? {
        let url = folder.appendingPathComponent(name)
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        do {
            return try RegularFile.contents(url.path, maxBytes: maxFileBytes)
        } catch let error as FileError {
            throw TokenizerError.unreadableFile(name: name, reason: error.description)
        }
    }

    static func jsonObject(_ data: Data, fileName: String) throws -> [String: Any] {
        let value: Any
        do {
            value = try JSONSerialization.jsonObject(with: data, options: [])
        } catch {
            throw TokenizerError.malformedJSON(name: fileName, reason: "\(error.localizedDescription)")
        }
        guard let object = value as? [String: Any] else {
            throw TokenizerError.malformedJSON(name: fileName, reason: "the top level is not a JSON object")
        }
        return object
    }

    /// `merges.txt` as `tokenizers` reads it: lines (LF or CRLF) that start with `#version` are
    /// skipped, every other line must be exactly two fields separated by one space (so an empty
    /// line is an error too, like in the reference).
    static func parseMerges(_ data: Data) throws -> [String] {
        guard String(data: data, encoding: .utf8) != nil else {
            throw TokenizerError.unreadableFile(name: "merges.txt", reason: "not valid UTF-8")
        }
        // Work on bytes: Swift treats "\r\n" as one Character, so splitting a String on "\n" would miss it.
        let bytes = [UInt8](data)
        var merges: [String] = []
        merges.reserveCapacity(bytes.count / 8)
        var lineStart = 0
        var lineNumber = 0
        while lineStart < bytes.count {
            lineNumber += 1
            var lineEnd = lineStart
            while lineEnd < bytes.count, bytes[lineEnd] != UInt8(ascii: "\n") { lineEnd += 1 }
            let next = lineEnd + 1
            if lineEnd < bytes.count, lineEnd > lineStart, bytes[lineEnd - 1] == UInt8(ascii: "\r") { lineEnd -= 1 }
            let line = bytes[lineStart..<lineEnd]
            lineStart = next
            if line.starts(with: Array("#version".utf8)) { continue }
            let spaces = line.lazy.filter { $0 == UInt8(ascii: " ") }.count
            let text = String(decoding: line, as: UTF8.self)
            guard spaces == 1 else {
                throw TokenizerError.badMergeLine(line: lineNumber, text: text)
            }
            merges.append(text)
        }
        return merges
    }

    // MARK: Validation shared with `OPTTokenizer.init`

    /// Ids must be in range and unique. Returns the highest id (-1 for an empty vocabulary).
    @discardableResult
    static func validateVocabulary(_ vocab: [String: Int]) throws -> Int {
        var highest = -1
        for (token, id) in vocab {
            guard id >= 0, id < TokenizerLimits.maximumTokenId else {
                throw TokenizerError.invalidTokenId(token: token, id: id)
            }
            highest = max(highest, id)
        }
        // One bit per id: bounded by maximumTokenId, so at most 2 MB even for a hostile file.
        var seen = [UInt64](repeating: 0, count: (highest >> 6) + 1)
        for (_, id) in vocab {
            let bit: UInt64 = 1 << UInt64(id & 63)
            if seen[id >> 6] & bit != 0 {
                let names = vocab.filter { $0.value == id }.map(\.key).sorted()
                throw TokenizerError.duplicateTokenId(id: id, first: names[0], second: names[names.count > 1 ? 1 : 0])
            }
            seen[id >> 6] |= bit
        }
        return highest
    }

    /// Refuses merges whose parts or result are not in the vocabulary, as `tokenizers` does.
    static func validateMerges(_ merges: [String], vocab: [String: Int]) throws {
        _ = try TokenTable(vocab).resolve(merges)
    }
}

// MARK: - Special and added tokens, the way transformers resolves them

/// One entry of the reference's special-token bookkeeping: either a bare string or a full AddedToken.
private enum SpecialValue: Equatable {
    case plain(String)
    case token(TokenOptions)

    var content: String {
        switch self {
        case let .plain(content): return content
        case let .token(options): return options.content
        }
    }

    init?(json: Any?) {
        if let string = json as? String {
            self = .plain(string)
        } else if let dictionary = json as? [String: Any], let options = TokenOptions(json: dictionary) {
            self = .token(options)
        } else {
            return nil
        }
    }
}

/// An added token without its id, with Python `AddedToken` defaults (normalized = !special).
private struct TokenOptions: Equatable {
    var content: String
    var special: Bool
    var lstrip = false
    var rstrip = false
    var normalized: Bool
    var singleWord = false

    init(content: String, special: Bool, normalized: Bool? = nil) {
        self.content = content
        self.special = special
        self.normalized = normalized ?? !special
    }

    init?(json: [String: Any]) {
        guard let content = json["content"] as? String else { return nil }
        let special = (json["special"] as? Bool) ?? false
        self.init(content: content, special: special, normalized: json["normalized"] as? Bool)
        lstrip = (json["lstrip"] as? Bool) ?? false
        rstrip = (json["rstrip"] as? Bool) ?? false
        singleWord = (json["single_word"] as? Bool) ?? false
    }
}

private struct AddedTokenResolver {
    static let namedKeys = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]
    /// `GPT2Tokenizer.__init__` defaults, used when the config does not mention the key at all.
    static let gpt2Defaults = ["bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"]

    let vocab: [String: Int]
    private var idForContent: [String: Int] = [:]
    private var tokenForId: [Int: TokenOptions] = [:]

    init(vocab: [String: Int]) {
        self.vocab = vocab
    }

    struct Resolved {
        var named: [String: String]
        /// The image token named by the config (`image_token`), if any.
        var imageToken: String?
    }

    mutating func resolve(config: [String: Any], specialMap: [String: Any]?, addedTokensFile: [String: Any]?) throws -> Resolved {
        var kwargs = config
        // transformers 5 renames additional_special_tokens to extra_special_tokens.
        if let additional = kwargs["additional_special_tokens"], !isTruthy(kwargs["extra_special_tokens"]) {
            kwargs["extra_special_tokens"] = additional
            kwargs["additional_special_tokens"] = nil
        }
        // Model-specific named tokens from the config itself (e.g. image_token).
        var explicitModelSpecific: [(String, SpecialValue)] = []
        for key in kwargs.keys.sorted() where Self.isModelSpecificKey(key) {
            if let value = SpecialValue(json: kwargs[key]) {
                explicitModelSpecific.append((key, value))
                kwargs[key] = nil
            }
        }
        if let extraDictionary = kwargs["extra_special_tokens"] as? [String: Any] {
            for key in extraDictionary.keys.sorted() {
                if let value = SpecialValue(json: extraDictionary[key]) {
                    explicitModelSpecific.append((key, value))
                }
            }
            kwargs["extra_special_tokens"] = nil
        }

        var namedValues: [String: SpecialValue] = [:]
        var declared: [(id: Int, options: TokenOptions)] = []
        var extras: [SpecialValue] = []

        if let decoder = kwargs["added_tokens_decoder"] as? [String: Any] {
            // The saved added tokens are authoritative; special_tokens_map.json and added_tokens.json are ignored.
            for (key, value) in decoder {
                guard let id = Int(key), let dictionary = value as? [String: Any],
                      let options = TokenOptions(json: dictionary) else {
                    throw TokenizerError.malformedJSON(
                        name: "tokenizer_config.json", reason: "added_tokens_decoder entry \(key.debugDescription) is not {id: {content: ...}}")
                }
                declared.append((id, options))
            }
        } else {
            if let specialMap {
                for key in specialMap.keys.sorted() {
                    let value = specialMap[key]
                    if key == "extra_special_tokens", let list = value as? [Any] {
                        var merged = (kwargs["extra_special_tokens"] as? [Any]) ?? []
                        for item in list {
                            let converted: Any = (item as? [String: Any]).map { dictionary -> Any in
                                var copy = dictionary
                                copy["special"] = true
                                return copy
                            } ?? item
                            merged.append(converted)
                        }
                        kwargs[key] = merged
                    } else if var dictionary = value as? [String: Any], key != "extra_special_tokens" {
                        dictionary["special"] = true
                        kwargs[key] = dictionary
                    } else {
                        kwargs[key] = value
                    }
                }
                if let extraDictionary = kwargs["extra_special_tokens"] as? [String: Any] {
                    for key in extraDictionary.keys.sorted() {
                        if let value = SpecialValue(json: extraDictionary[key]) {
                            explicitModelSpecific.append((key, value))
                        }
                    }
                    kwargs["extra_special_tokens"] = nil
                }
            }
            if let addedTokensFile {
                // Whether an entry is special is decided against the named and extra tokens known so far.
                var specialStrings = Set<String>()
                for key in Self.namedKeys {
                    if let value = SpecialValue(json: kwargs[key]) { specialStrings.insert(value.content) }
                }
                for item in (kwargs["extra_special_tokens"] as? [Any]) ?? [] {
                    if let value = SpecialValue(json: item) { specialStrings.insert(value.content) }
                }
                var byId: [Int: TokenOptions] = [:]
                for (content, value) in addedTokensFile {
                    guard let id = (value as? NSNumber)?.intValue else {
                        throw TokenizerError.malformedJSON(name: "added_tokens.json", reason: "\(content.debugDescription) does not map to an integer id")
                    }
                    let isSpecial = specialStrings.contains(content)
                    byId[id] = TokenOptions(content: content, special: isSpecial, normalized: !isSpecial)
                }
                declared = byId.map { ($0.key, $0.value) }
            }
        }
        declared.sort { $0.id < $1.id }
        // PreTrainedTokenizerBase.__init__ renames once more, now only when the key is absent.
        if let additional = kwargs["additional_special_tokens"], kwargs["extra_special_tokens"] == nil {
            kwargs["extra_special_tokens"] = additional
            kwargs["additional_special_tokens"] = nil
        }

        // Named tokens that match a declared added token take that token's options.
        let declaredByContent = Dictionary(declared.map { ($0.options.content, $0.options) }, uniquingKeysWith: { _, last in last })
        for key in Self.namedKeys {
            if kwargs.keys.contains(key) {
                guard var value = SpecialValue(json: kwargs[key]) else { continue }
                if let options = declaredByContent[value.content] { value = .token(options) }
                namedValues[key] = value
            } else if let fallback = Self.gpt2Defaults[key] {
                namedValues[key] = .plain(fallback)
            }
        }
        for item in (kwargs["extra_special_tokens"] as? [Any]) ?? [] {
            if let value = SpecialValue(json: item) { extras.append(value) }
        }
        // Keys that arrived through special_tokens_map.json are detected at init, before the config's own.
        var modelSpecific: [(String, SpecialValue)] = []
        for key in kwargs.keys.sorted() where Self.isModelSpecificKey(key) {
            if let value = SpecialValue(json: kwargs[key]) { modelSpecific.append((key, value)) }
        }
        for (key, value) in explicitModelSpecific {
            if let index = modelSpecific.firstIndex(where: { $0.0 == key }) {
                modelSpecific[index].1 = value
            } else {
                modelSpecific.append((key, value))
            }
        }

        // What TokenizersBackend.__init__ adds, in its order.
        var toAdd: [SpecialValue] = declared.map { .token($0.options) }
        let encoder = Set(declared.map(\.options.content))
        var orderedNamed: [(String, SpecialValue)] = Self.namedKeys.compactMap { key in namedValues[key].map { (key, $0) } }
        orderedNamed += modelSpecific
        for (_, value) in orderedNamed where !encoder.contains(value.content) && !toAdd.contains(value) {
            toAdd.append(value)
        }
        for value in extras where !encoder.contains(value.content) && !toAdd.contains(value) {
            toAdd.append(value)
        }
        let namedContents = Set(orderedNamed.map(\.1.content))
        let options: [TokenOptions] = toAdd.map { value in
            switch value {
            case let .plain(content):
                return TokenOptions(content: content, special: true, normalized: false)
            case var .token(options):
                if !options.special && namedContents.contains(options.content) { options.special = true }
                return options
            }
        }
        add(options)

        var named: [String: String] = [:]
        for (key, value) in orderedNamed { named[key] = value.content }
        return Resolved(named: named, imageToken: named["image_token"])
    }

    /// `Blip2Processor` adds `<image>` (special, not normalized) unless the tokenizer already names an image token.
    mutating func addImageToken(named configured: String?, at index: Int?) throws -> String {
        let content = configured ?? "<image>"
        if configured == nil {
            let options = TokenOptions(content: content, special: true, normalized: false)
            if let index, idForContent[content] == nil, vocab[content] == nil {
                if let other = tokenForId[index] {
                    throw TokenizerError.imageTokenConflict("id \(index) already belongs to \(other.content.debugDescription)")
                }
                if let other = vocab.first(where: { $0.value == index }) {
                    throw TokenizerError.imageTokenConflict("id \(index) already belongs to \(other.key.debugDescription)")
                }
                place(options, at: index)
            } else {
                add([options])
            }
        }
        guard let id = idForContent[content] ?? vocab[content] else {
            throw TokenizerError.imageTokenConflict("\(content.debugDescription) could not be added")
        }
        if let index, id != index {
            throw TokenizerError.imageTokenConflict(
                "the tokenizer files put \(content.debugDescription) at id \(id) but the model expects \(index); use the tokenizer that came with the model")
        }
        return content
    }

    func finalTokens() -> [AddedToken] {
        tokenForId.keys.sorted().compactMap { id in
            guard let options = tokenForId[id] else { return nil }
            return AddedToken(
                id: id, content: options.content, special: options.special, lstrip: options.lstrip,
                rstrip: options.rstrip, normalized: options.normalized, singleWord: options.singleWord)
        }
    }

    /// `tokenizers`' AddedVocabulary.add_tokens: identical tokens are ignored, a known content keeps
    /// its id (and takes the new options), anything else gets the next id after the vocabulary.
    private mutating func add(_ tokens: [TokenOptions]) {
        for token in tokens {
            if token.content.isEmpty || tokenForId.values.contains(token) { continue }
            let id = idForContent[token.content] ?? vocab[token.content] ?? nextId()
            place(token, at: id)
        }
    }

    private mutating func place(_ token: TokenOptions, at id: Int) {
        idForContent[token.content] = id
        tokenForId[id] = token
    }

    private func nextId() -> Int {
        guard let highest = idForContent.values.max() else { return vocab.count }
        return (highest >= vocab.count || vocab.isEmpty) ? highest + 1 : vocab.count
    }

    private static func isModelSpecificKey(_ key: String) -> Bool {
        key.hasSuffix("_token") && !namedKeys.contains(key)
    }

    private func isTruthy(_ value: Any?) -> Bool {
        switch value {
        case nil, is NSNull: return false
        case let list as [Any]: return !list.isEmpty
        case let dictionary as [String: Any]: return !dictionary.isEmpty
        case let string as String: return !string.isEmpty
        default: return true
        }
    }
}
