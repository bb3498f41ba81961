import Foundation
import Testing
@testable import Blip2Tokenizer

/// A hand-made tokenizer whose expected behaviour follows from BPE's definition.
enum HandMade {
    static let space = "\u{120}"  // Ġ, the byte-level spelling of " "
    /// Every single byte spelled at ids 10..<266, plus a few merges.
    static func data() -> TokenizerData {
        var vocab: [String: Int] = ["<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3]
        for byte in 0..<256 {
            vocab[ByteLevel.token(forByte: UInt8(byte))] = 10 + byte
        }
        let merges = ["h e", "l l", "he ll", "hell o", "\(space) w", "\(space)w o", "\(space)wo r", "\(space)wor l", "\(space)worl d"]
        var next = 300
        for merge in merges {
            let merged = merge.replacingOccurrences(of: " ", with: "")
            if vocab[merged] == nil {
                vocab[merged] = next
                next += 1
            }
        }
        return TokenizerData(
            vocab: vocab, merges: merges,
            addedTokens: [
                AddedToken(id: 1, content: "<pad>", special: true, normalized: true),
                AddedToken(id: 2, content: "</s>", special: true, normalized: true),
                AddedToken(id: 400, content: "<image>", special: true, normalized: false),
            ],
            bosToken: "</s>", eosToken: "</s>", padToken: "<pad>", unkToken: "</s>",
            addBosToken: true, imageToken: "<image>"
        )
    }
}

@Suite("TokenizerData")
struct TokenizerDataTests {
    @Test func handMadeTokenizerFollowsBPE() throws {
        let data = HandMade.data()
        let tokenizer = try OPTTokenizer(data)
        let hello = data.vocab["hello"]!
        let world = data.vocab["\(HandMade.space)world"]!
        #expect(tokenizer.encode("hello world") == [2, hello, world])
        #expect(tokenizer.encode("hello world", addBOS: false) == [hello, world])
        // "hellx": the merges reach "hell", then "x" stays a byte.
        #expect(tokenizer.encode("hellx", addBOS: false) == [data.vocab["hell"]!, 10 + Int(UInt8(ascii: "x"))])
        #expect(tokenizer.encode("<image>hello", addBOS: false) == [400, hello])
        #expect(tokenizer.decode([2, 400, hello, world, 1]) == "hello world")
        #expect(tokenizer.decode([2, 400, hello, world, 1], skipSpecialTokens: false) == "</s><image>hello world<pad>")
        #expect(tokenizer.vocabularySize == data.vocab.count + 1)
        #expect(try tokenizer.encode("hello", imageTokenCount: 3) == [400, 400, 400, 2, hello])
    }

    @Test func codableRoundTripUsesSnakeCaseKeys() throws {
        let data = HandMade.data()
        let encoded = try JSONEncoder().encode(data)
        let decoded = try JSONDecoder().decode(TokenizerData.self, from: encoded)
        #expect(decoded == data)
        let object = try #require(try JSONSerialization.jsonObject(with: encoded) as? [String: Any])
        for key in ["vocab", "merges", "added_tokens", "bos_token", "eos_token", "pad_token", "unk_token", "add_bos_token", "image_token", "add_prefix_space"] {
            #expect(object[key] != nil, "missing key \(key)")
        }
        let tokensById = try #require(object["vocab"] as? [Any])
        #expect(tokensById.count == 309)  // ids 0...308, the gap at 4..<10 as null
        #expect(tokensById[0] as? String == "<s>" && tokensById[4] is NSNull)
        let firstAdded = try #require((object["added_tokens"] as? [[String: Any]])?.first)
        #expect(Set(firstAdded.keys) == ["id", "content", "special", "lstrip", "rstrip", "normalized", "single_word"])
    }

    @Test func vocabularyWithRepeatedTokenIsRefused() {
        let json = #"{"vocab": ["a", "b", "a"], "merges": []}"#
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(TokenizerData.self, from: Data(json.utf8)) }
        var data = HandMade.data()
        data.vocab["zz"] = -4
        #expect(throws: EncodingError.self) { try JSONEncoder().encode(data) }
    }

    @Test func decodingToleratesMissingOptionalKeys() throws {
        let json = #"{"vocab": {"a": 0, "</s>": 1}, "merges": [], "eos_token": "</s>", "bos_token": "</s>"}"#
        let data = try JSONDecoder().decode(TokenizerData.self, from: Data(json.utf8))
        #expect(data.addedTokens.isEmpty && !data.addBosToken && !data.addPrefixSpace && data.imageToken == nil)
        #expect(try OPTTokenizer(data).encode("a") == [0])
    }

    @Test(.enabled(if: TestPaths.optFilesPresent, TestPaths.optMissingReason))
    func codableRoundTripOfTheRealFiles() throws {
        let data = try TokenizerData.load(huggingFaceFolder: TestPaths.optFolder, imageTokenIndex: 50265)
        #expect(data.vocab.count == 50265)
        #expect(data.merges.count == 50000)
        #expect(data.merges.first == "\u{120} t")
        #expect(data.bosToken == "</s>" && data.eosToken == "</s>" && data.unkToken == "</s>" && data.padToken == "<pad>")
        #expect(data.addBosToken && !data.addPrefixSpace && data.imageToken == "<image>")
        let decoded = try JSONDecoder().decode(TokenizerData.self, from: JSONEncoder().encode(data))
        #expect(decoded == data)
        #expect(try OPTTokenizer(decoded).encode("A photo of a cat") == [2, 250, 1345, 9, 10, 4758])
    }

    /// The hand-written vocab.json reader agrees with Foundation's JSON parser on the real file.
    @Test(.enabled(if: TestPaths.optFilesPresent, TestPaths.optMissingReason))
    func vocabularyReaderMatchesFoundation() throws {
        let bytes = try Data(contentsOf: TestPaths.optFolder.appendingPathComponent("vocab.json"))
        let fast = try VocabularyJSON.parse(bytes, fileName: "vocab.json")
        let reference = try #require(try JSONSerialization.jsonObject(with: bytes) as? [String: Int])
        #expect(fast == reference)
    }

    @Test func vocabularyReaderHandlesEscapes() throws {
        let json = #"{ "\u0120the" : 5 , "a\"b\\c\/": 6, "\ud83d\ude00": 7, "tab\tnl\n": 8, "é": -1 }"#
        let parsed = try VocabularyJSON.parse(Data(json.utf8), fileName: "vocab.json")
        #expect(parsed == ["\u{120}the": 5, "a\"b\\c/": 6, "😀": 7, "tab\tnl\n": 8, "é": -1])
        #expect(try VocabularyJSON.parse(Data("{}".utf8), fileName: "vocab.json").isEmpty)
        #expect(try VocabularyJSON.parse(Data(#"{"a": 1, "a": 2}"#.utf8), fileName: "vocab.json") == ["a": 2])
    }

    @Test(arguments: [
        #"{"a": 1"#, #"{"a": 1,}"#, #"["a"]"#, #"{"a": "1"}"#, #"{"a": 1.5}"#, #"{"a": 1e3}"#, #"{"\ud800": 1}"#,
        #"{"a": 1} x"#, #"{"a" 1}"#, #"{"a": 99999999999999999999999}"#, "", #"{"bad\q": 1}"#, "{\"a\u{1}\": 1}",
    ])
    func vocabularyReaderRejectsMalformedJSON(_ json: String) {
        #expect(throws: TokenizerError.self) { try VocabularyJSON.parse(Data(json.utf8), fileName: "vocab.json") }
    }

    @Test func vocabularyReaderRejectsInvalidUTF8() {
        var bytes = Array(#"{"ab": 1}"#.utf8)
        bytes[2] = 0xFF
        #expect(throws: TokenizerError.self) { try VocabularyJSON.parse(Data(bytes), fileName: "vocab.json") }
    }
}

@Suite("Loading a Hugging Face folder")
struct LoaderTests {
    static let vocab = #"{"<s>": 0, "<pad>": 1, "</s>": 2, "a": 3, "b": 4, "ab": 5, "\u0120": 6}"#
    static let config = #"{"tokenizer_class": "GPT2Tokenizer", "bos_token": "</s>", "eos_token": "</s>", "unk_token": "</s>", "pad_token": "<pad>", "add_bos_token": true}"#
    static let goodFiles = ["vocab.json": vocab, "merges.txt": "#version: 0.2\na b\n", "tokenizer_config.json": config]

    func load(_ files: [String: String], imageTokenIndex: Int? = nil) throws -> TokenizerData {
        let folder = try makeTemporaryFolder(files)
        defer { try? FileManager.default.removeItem(at: folder) }
        return try TokenizerData.load(huggingFaceFolder: folder, imageTokenIndex: imageTokenIndex)
    }

    func error(_ files: [String: String], imageTokenIndex: Int? = nil) -> TokenizerError? {
        do {
            _ = try load(files, imageTokenIndex: imageTokenIndex)
            return nil
        } catch let error as TokenizerError {
            return error
        } catch {
            Issue.record("unexpected error type \(error)")
            return nil
        }
    }

    @Test func goodFolderLoads() throws {
        let data = try load(Self.goodFiles)
        #expect(data.merges == ["a b"])
        #expect(data.addedTokens.map(\.id) == [1, 2, 7])  // <image> takes the next id after the 7 vocabulary entries
        let tokenizer = try OPTTokenizer(data)
        #expect(tokenizer.encode("ab a<image>") == [2, 5, 6, 3, 7])
    }

    @Test(arguments: ["vocab.json", "merges.txt", "tokenizer_config.json"])
    func missingFileIsNamed(_ name: String) {
        var files = Self.goodFiles
        files[name] = nil
        let failure = error(files)
        guard case let .missingFile(missing, _)? = failure else {
            Issue.record("expected missingFile, got \(String(describing: failure))")
            return
        }
        #expect(missing == name)
        #expect(failure?.description.contains(name) == true)
    }

    @Test func malformedJSONNamesTheFile() {
        for name in ["vocab.json", "tokenizer_config.json"] {
            var files = Self.goodFiles
            files[name] = "{ not json"
            guard case let .malformedJSON(file, _)? = error(files) else {
                Issue.record("expected malformedJSON for \(name)")
                continue
            }
            #expect(file == name)
        }
        var files = Self.goodFiles
        files["special_tokens_map.json"] = "[1, 2]"
        guard case .malformedJSON("special_tokens_map.json", _)? = error(files) else {
            Issue.record("expected malformedJSON for special_tokens_map.json")
            return
        }
    }

    @Test func badMergeLinesAreReportedWithTheirLineNumber() {
        var files = Self.goodFiles
        files["merges.txt"] = "#version: 0.2\na b\na  b\n"
        #expect(error(files) == .badMergeLine(line: 3, text: "a  b"))
        files["merges.txt"] = "a b\n\n"
        #expect(error(files) == .badMergeLine(line: 2, text: ""))
        files["merges.txt"] = "a b\r\nab\r\n"
        #expect(error(files) == .badMergeLine(line: 2, text: "ab"))
    }

    @Test func mergesOverUnknownSymbolsAreRefused() {
        var files = Self.goodFiles
        files["merges.txt"] = "a b\nb q\n"
        #expect(error(files) == .mergeSymbolNotInVocabulary(rank: 1, merge: "b q", symbol: "q"))
        files["merges.txt"] = "b a\n"
        #expect(error(files) == .mergeSymbolNotInVocabulary(rank: 0, merge: "b a", symbol: "ba"))
    }

    @Test func hostileIdsAreRefused() {
        var files = Self.goodFiles
        files["vocab.json"] = #"{"a": 3, "b": 3, "ab": 5}"#
        #expect(error(files) == .duplicateTokenId(id: 3, first: "a", second: "b"))
        files["vocab.json"] = #"{"a": -3, "b": 4, "ab": 5}"#
        #expect(error(files) == .invalidTokenId(token: "a", id: -3))
        files["vocab.json"] = #"{"a": 3, "b": 4, "ab": 999999999999}"#
        #expect(error(files) == .invalidTokenId(token: "ab", id: 999_999_999_999))
    }

    @Test func unsupportedTokenizerClassIsRefused() {
        var files = Self.goodFiles
        files["tokenizer_config.json"] = #"{"tokenizer_class": "LlamaTokenizer"}"#
        #expect(error(files) == .unsupportedTokenizerClass("LlamaTokenizer"))
    }

    @Test func imageTokenIndexIsHonouredOrRefused() throws {
        let pinned = try load(Self.goodFiles, imageTokenIndex: 50)  // a gap is allowed
        #expect(pinned.addedTokens.last == AddedToken(id: 50, content: "<image>", special: true, normalized: false))
        #expect(try OPTTokenizer(pinned).imageTokenId == 50)
        guard case .imageTokenConflict? = error(Self.goodFiles, imageTokenIndex: 4) else {
            Issue.record("id 4 belongs to \"b\" and must not be reused")
            return
        }
        var files = Self.goodFiles
        files["tokenizer_config.json"] = #"{"bos_token": "</s>", "eos_token": "</s>", "added_tokens_decoder": {"9": {"content": "<image>", "special": true}}}"#
        // The reference assigns the next free id, not the saved one.
        #expect(try load(files, imageTokenIndex: 7).addedTokens.first { $0.content == "<image>" }?.id == 7)
        guard case .imageTokenConflict? = error(files, imageTokenIndex: 9) else {
            Issue.record("<image> is at 7, a model expecting 9 must be refused")
            return
        }
    }

    @Test func tokenizerRefusesDataWithoutBosOrEos() {
        var data = HandMade.data()
        data.bosToken = nil
        #expect(throws: TokenizerError.missingSpecialToken(role: "bos", token: nil)) { try OPTTokenizer(data) }
        data = HandMade.data()
        data.eosToken = "<nowhere>"
        #expect(throws: TokenizerError.missingSpecialToken(role: "eos", token: "<nowhere>")) { try OPTTokenizer(data) }
        data = HandMade.data()
        data.addedTokens.append(AddedToken(id: 400, content: "<other>", special: false, normalized: true))
        #expect(throws: TokenizerError.self) { try OPTTokenizer(data) }
        data = HandMade.data()
        data.merges.append("h")
        #expect(throws: TokenizerError.badMergeLine(line: 10, text: "h")) { try OPTTokenizer(data) }
    }

    @Test func errorMessagesSayWhatToDo() {
        let samples: [TokenizerError] = [
            .missingFile(name: "vocab.json", folder: "/x"), .malformedJSON(name: "vocab.json", reason: "r"),
            .badMergeLine(line: 3, text: "a"), .mergeSymbolNotInVocabulary(rank: 1, merge: "a b", symbol: "b"),
            .invalidTokenId(token: "a", id: -1), .duplicateTokenId(id: 1, first: "a", second: "b"),
            .unsupportedTokenizerClass("X"), .missingSpecialToken(role: "bos", token: nil), .noImageToken,
            .imageTokenConflict("id 4 already belongs to \"b\""), .unreadableFile(name: "merges.txt", reason: "permission denied"),
        ]
        for sample in samples {
            #expect(sample.description.count > 20)
        }
    }

    /// Random damage to the files must end in an error or a working tokenizer, never a crash.
    @Test func damagedFilesNeverCrash() throws {
        var generator = SplitMix64(seed: 42)
        let originals = Self.goodFiles.mapValues { Array($0.utf8) }
        for round in 0..<300 {
            var files: [String: String] = [:]
            for (name, bytes) in originals {
                var damaged = bytes
                for _ in 0..<Int(generator.next() % 4) where !damaged.isEmpty {
                    let index = Int(generator.next() % UInt64(damaged.count))
                    switch generator.next() % 3 {
                    case 0: damaged[index] = UInt8(truncatingIfNeeded: generator.next())
                    case 1: damaged.remove(at: index)
                    default: damaged.insert(UInt8(truncatingIfNeeded: generator.next()), at: index)
                    }
                }
                files[name] = String(decoding: damaged, as: UTF8.self)
            }
            if let data = try? load(files), let tokenizer = try? OPTTokenizer(data) {
                _ = tokenizer.decode(tokenizer.encode("ab a\u{0}<image> ab", addBOS: round % 2 == 0) + [-1, 1 << 30])
            }
        }
    }
}

/// Deterministic pseudo-random numbers for tests.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
