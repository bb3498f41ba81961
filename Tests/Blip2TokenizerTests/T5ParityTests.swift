import Foundation
import Testing
@testable import Blip2Tokenizer

// MARK: - Fixture shape (written by Tools/make_t5_tokenizer_cases.py)

struct T5Cases: Decodable {
    struct Variant: Decodable {
        struct Encode: Decodable {
            var name: String
            var text: String
            var ids: [Int]
            var decoded: String
            var decodedKeepSpecial: String
            enum CodingKeys: String, CodingKey {
                case name, text, ids, decoded
                case decodedKeepSpecial = "decoded_keep_special"
            }
        }
        struct Decode: Decodable {
            var name: String
            var ids: [Int]
            var text: String
            var textKeepSpecial: String
            enum CodingKeys: String, CodingKey {
                case name, ids, text
                case textKeepSpecial = "text_keep_special"
            }
        }
        var len: Int
        var eosTokenId: Int
        var padTokenId: Int
        var unkTokenId: Int
        var extraId0: Int
        var extraId99: Int
        var encode: [Encode]
        var decode: [Decode]
        enum CodingKeys: String, CodingKey {
            case len, encode, decode
            case eosTokenId = "eos_token_id", padTokenId = "pad_token_id", unkTokenId = "unk_token_id"
            case extraId0 = "extra_id_0", extraId99 = "extra_id_99"
        }
    }
    struct Normalized: Decodable {
        var text: String
        var normalized: String
    }
    var variants: [String: Variant]
    var precompiled: [Normalized]

    static let shared: T5Cases? = try? Fixtures.load("t5_cases.json", as: T5Cases.self)
}

enum T5Fixtures {
    static func folder(_ variant: String) -> URL {
        TestPaths.fixtures.appendingPathComponent("t5").appendingPathComponent(variant)
    }

    /// The tokenizer as `tokenizers` loads the file: without the image token `Blip2Processor` adds.
    static func tokenizer(_ variant: String) throws -> T5Tokenizer {
        var data = try T5TokenizerData.load(huggingFaceFolder: folder(variant))
        data.imageToken = nil
        return try T5Tokenizer(data)
    }
}

// MARK: - Parity

/// Encode/decode parity with `tokenizers` (and, for the T5 variant, transformers' T5Tokenizer) on Unigram
/// models trained by Tools/make_t5_tokenizer_cases.py.
@Suite("T5 tokenizer parity with tokenizers", .serialized)
struct T5ParityTests {
    static let variants = ["nmt_nfkc", "byte_fallback", "tiny"]

    @Test(arguments: variants)
    func specialTokens(variant: String) throws {
        let tokenizer = try T5Fixtures.tokenizer(variant)
        let expected = try #require(T5Cases.shared?.variants[variant])
        #expect(tokenizer.vocabularySize == expected.len)
        #expect(tokenizer.eosTokenId == expected.eosTokenId)
        #expect(tokenizer.padTokenId == expected.padTokenId)
        #expect(tokenizer.unkTokenId == expected.unkTokenId)
        #expect(tokenizer.id(for: "<extra_id_0>") == expected.extraId0)
        #expect(tokenizer.id(for: "<extra_id_99>") == expected.extraId99)
        #expect(tokenizer.token(for: expected.extraId0) == "<extra_id_0>")
        #expect(tokenizer.isSpecial(expected.eosTokenId) && tokenizer.isSpecial(expected.extraId0))
        #expect(tokenizer.token(for: expected.len) == nil && tokenizer.token(for: -1) == nil)
        #expect(tokenizer.addedTokens.count == 103)
    }

    @Test(arguments: variants)
    func encodeMatchesReference(variant: String) throws {
        let tokenizer = try T5Fixtures.tokenizer(variant)
        let cases = try #require(T5Cases.shared?.variants[variant])
        var failures = 0
        for item in cases.encode {
            let ids = tokenizer.encode(item.text)
            #expect(ids == item.ids, "\(variant) \(item.name): \(visible(item.text)) -> \(ids.map { tokenizer.token(for: $0) ?? "?" })")
            #expect(tokenizer.encode(item.text, addSpecialTokens: false) == Array(item.ids.dropLast()), "\(variant) \(item.name)")
            if ids != item.ids { failures += 1 }
        }
        #expect(cases.encode.count > (variant == "tiny" ? 200 : 500))
        #expect(failures == 0)
    }

    @Test(arguments: variants)
    func decodeOfEncodedTextMatchesReference(variant: String) throws {
        let tokenizer = try T5Fixtures.tokenizer(variant)
        let cases = try #require(T5Cases.shared?.variants[variant])
        for item in cases.encode {
            #expect(tokenizer.decode(item.ids) == item.decoded, "\(variant) \(item.name): \(visible(tokenizer.decode(item.ids))) vs \(visible(item.decoded))")
            #expect(tokenizer.decode(item.ids, skipSpecialTokens: false) == item.decodedKeepSpecial, "\(variant) \(item.name)")
        }
    }

    @Test(arguments: variants)
    func decodeMatchesReference(variant: String) throws {
        let tokenizer = try T5Fixtures.tokenizer(variant)
        let cases = try #require(T5Cases.shared?.variants[variant])
        for item in cases.decode {
            #expect(tokenizer.decode(item.ids) == item.text, "\(variant) \(item.name): \(visible(tokenizer.decode(item.ids))) vs \(visible(item.text))")
            #expect(tokenizer.decode(item.ids, skipSpecialTokens: false) == item.textKeepSpecial, "\(variant) \(item.name)")
        }
    }

    /// Older hub files spell Metaspace with `add_prefix_space` (and `str_rep`) and have no `byte_fallback` key;
    /// the reference reads them as prepend_scheme "always", split true, no byte fallback (the script checks
    /// that it encodes every string the same).
    @Test func legacyMetaspaceSerializationEncodesTheSame() throws {
        let cases = try #require(T5Cases.shared?.variants["nmt_nfkc"])
        let url = T5Fixtures.folder("nmt_nfkc").appendingPathComponent("tokenizer.json")
        var root = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let legacy: [String: Any] = ["type": "Metaspace", "replacement": "▁", "add_prefix_space": true]
        var preTokenizer = try #require(root["pre_tokenizer"] as? [String: Any])
        var steps = try #require(preTokenizer["pretokenizers"] as? [Any])
        steps[1] = legacy.merging(["str_rep": "▁"]) { first, _ in first }
        preTokenizer["pretokenizers"] = steps
        root["pre_tokenizer"] = preTokenizer
        root["decoder"] = legacy
        var model = try #require(root["model"] as? [String: Any])
        model["byte_fallback"] = nil
        root["model"] = model
        let json = String(decoding: try JSONSerialization.data(withJSONObject: root), as: UTF8.self)
        let tokenizer = try T5Tokenizer(T5TokenizerData(tokenizerJSON: json))
        for item in cases.encode {
            #expect(tokenizer.encode(item.text) == item.ids, "\(item.name)")
            #expect(tokenizer.decode(item.ids) == item.decoded, "\(item.name)")
        }
    }

    /// The Precompiled charsmap alone, on every scalar of the blocks NFKC and SentencePiece's rules rewrite.
    @Test func precompiledNormalizerMatchesReference() throws {
        let cases = try #require(T5Cases.shared)
        let json = try String(contentsOf: T5Fixtures.folder("nmt_nfkc").appendingPathComponent("tokenizer.json"), encoding: .utf8)
        let normalizer = try #require(try UnigramTokenizerSpec(json: json).normalizer)
        var mismatches = 0
        for item in cases.precompiled {
            let actual = normalizer.apply(item.text)
            #expect(actual == item.normalized, "\(visible(item.text)): \(visible(actual)) vs \(visible(item.normalized))")
            if actual != item.normalized { mismatches += 1 }
        }
        #expect(cases.precompiled.count > 400)
        #expect(mismatches == 0)
    }

    /// The model file stores `T5TokenizerData` as JSON; what comes back builds the same tokenizer.
    @Test func dataRoundTripsThroughJSON() throws {
        let data = try T5TokenizerData.load(huggingFaceFolder: T5Fixtures.folder("byte_fallback"))
        let decoded = try JSONDecoder().decode(T5TokenizerData.self, from: try JSONEncoder().encode(data))
        #expect(decoded == data)
        let text = "Question: what is this? Answer: 😀 <extra_id_3>"
        #expect(try T5Tokenizer(decoded).encode(text) == (try T5Tokenizer(data).encode(text)))
    }

    /// Timings (printed): loading the T5 folder with its 240 KB charsmap, and encoding the long paragraph.
    @Test func timings() throws {
        let cases = try #require(T5Cases.shared?.variants["nmt_nfkc"])
        let paragraph = try #require(cases.encode.first { $0.name == "long paragraph" })
        var tokenizer: T5Tokenizer?
        let load = try PerformanceTests.seconds { tokenizer = try T5Fixtures.tokenizer("nmt_nfkc") }
        let loaded = try #require(tokenizer)
        var best = Double.infinity
        for _ in 0..<20 {
            best = min(best, PerformanceTests.seconds { #expect(loaded.encode(paragraph.text) == paragraph.ids) })
        }
        let decode = PerformanceTests.seconds { for _ in 0..<20 { _ = loaded.decode(paragraph.ids) } } / 20
        print("T5 tokenizer: load + build \(Int(load * 1000)) ms; encode \(paragraph.text.utf8.count) bytes -> \(paragraph.ids.count) ids in \(Int(best * 1e6)) µs; decode \(Int(decode * 1e6)) µs")
    }

    /// Both families behind one protocol: the pipeline's view.
    @Test func textTokenizerProtocol() throws {
        let tokenizer: any TextTokenizer = try T5Fixtures.tokenizer("nmt_nfkc")
        let ids = tokenizer.encode("a photo of", addSpecialTokens: true)
        #expect(ids.last == tokenizer.eosTokenId)
        #expect(tokenizer.decode(ids, skipSpecialTokens: true) == "a photo of")
    }
}
