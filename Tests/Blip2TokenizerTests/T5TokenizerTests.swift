import Foundation
import Testing
@testable import Blip2Tokenizer

/// A hand-made Unigram tokenizer.json; expected segmentations follow from the scores.
enum HandMadeUnigram {
    static let pieces: [(String, Double)] = [
        ("<pad>", 0), ("</s>", 0), ("<unk>", 0), ("a", -1), ("b", -1), ("c", -1), ("d", -1), ("cd", 1), ("ab", 2),
        ("abc", 5), ("abcd", 10), ("▁", -2), ("▁ab", 3), ("<0x78>", -1), ("<0xC3>", -1), ("<0xA9>", -1),
    ]

    static func json(byteFallback: Bool = false, normalizer: String = "null", preTokenizer: String? = nil,
                     decoder: String? = nil, extra: String = "", model: String? = nil) -> String {
        let vocab = pieces.map { "[\(String(reflecting: $0.0)), \($0.1)]" }.joined(separator: ",")
        let metaspace = #"{"type":"Metaspace","replacement":"▁","prepend_scheme":"always","split":true}"#
        return """
        {"version":"1.0","truncation":null,"padding":null,\(extra)
         "added_tokens":[{"id":0,"content":"<pad>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
                         {"id":1,"content":"</s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
                         {"id":2,"content":"<unk>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
                         {"id":16,"content":"<extra_id_0>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],
         "normalizer":\(normalizer),
         "pre_tokenizer":\(preTokenizer ?? #"{"type":"Sequence","pretokenizers":[{"type":"WhitespaceSplit"},\#(metaspace)]}"#),
         "post_processor":{"type":"TemplateProcessing","single":[{"Sequence":{"id":"A","type_id":0}},{"SpecialToken":{"id":"</s>","type_id":0}}],
                           "pair":[],"special_tokens":{"</s>":{"id":"</s>","ids":[1],"tokens":["</s>"]}}},
         "decoder":\(decoder ?? metaspace),
         "model":\(model ?? #"{"type":"Unigram","unk_id":2,"vocab":[\#(vocab)],"byte_fallback":\#(byteFallback)}"#)}
        """
    }

    static func tokenizer(_ json: String) throws -> T5Tokenizer {
        try T5Tokenizer(T5TokenizerData(tokenizerJSON: json))
    }
}

@Suite("T5 tokenizer from first principles")
struct T5TokenizerTests {
    func tokens(_ tokenizer: T5Tokenizer, _ text: String) -> [String] {
        tokenizer.encode(text, addSpecialTokens: false).map { tokenizer.token(for: $0) ?? "?" }
    }

    @Test func viterbiPicksTheHighestScoringSplit() throws {
        let tokenizer = try HandMadeUnigram.tokenizer(HandMadeUnigram.json(preTokenizer: "null", decoder: "null"))
        // abcd (10) beats abc+d (4) and ab+cd (3); "a" then "cd" (0) beats a+c+d (-3); unknown x x fuse into one <unk>.
        #expect(tokens(tokenizer, "abcdacdxx") == ["abcd", "a", "cd", "<unk>"])
        #expect(tokenizer.encode("abcdacdxx") == [10, 3, 7, 2, 1])
        #expect(tokenizer.encode("") == [1])
        // Ties keep the first path found: "ab" reached from 0 in one piece (2) beats a+b (-2).
        #expect(tokens(tokenizer, "ab") == ["ab"])
    }

    @Test func byteFallbackSpellsUnknownTextAsBytes() throws {
        let tokenizer = try HandMadeUnigram.tokenizer(HandMadeUnigram.json(byteFallback: true, preTokenizer: "null", decoder: "null"))
        // "x" has its byte piece; "é" is C3 A9; "y" has none, so the fused unknown "xy" falls back to <unk>.
        #expect(tokens(tokenizer, "axé") == ["a", "<0x78>", "<0xC3>", "<0xA9>"])
        #expect(tokens(tokenizer, "axy") == ["a", "<unk>"])
    }

    @Test func metaspacePipelineAndExtraIds() throws {
        let tokenizer = try HandMadeUnigram.tokenizer(HandMadeUnigram.json())
        // Whitespace runs vanish (WhitespaceSplit), each word gets "▁" in front.
        #expect(tokens(tokenizer, "  ab \t\n ab ") == ["▁ab", "▁ab"])
        #expect(tokens(tokenizer, "ab<extra_id_0>cd") == ["▁ab", "<extra_id_0>", "▁", "cd"])
        #expect(tokenizer.decode(tokenizer.encode("ab<extra_id_0>cd")) == "ab cd")
        #expect(tokenizer.decode(tokenizer.encode("ab<extra_id_0>cd"), skipSpecialTokens: false) == "ab<extra_id_0> cd</s>")
        // The first piece loses its "▁"; later ones turn it into a space.
        #expect(tokenizer.decode([12, 12, 3]) == "ab aba")
        #expect(tokenizer.decode([99, -1, 12]) == "ab")
    }

    @Test func decoderSteps() throws {
        let decoder = #"{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]}"#
        let tokenizer = try HandMadeUnigram.tokenizer(HandMadeUnigram.json(byteFallback: true, decoder: decoder))
        #expect(tokenizer.decode([12, 14, 15, 13]) == "abéx")
        // A run of byte pieces that is not UTF-8 becomes one U+FFFD per byte, the valid "x" included.
        #expect(tokenizer.decode([12, 14, 13]) == "ab\u{FFFD}\u{FFFD}")
        #expect(TokenDecoder.bytePiece("<0x+F>") == 15)  // Rust's from_str_radix takes a sign
        #expect(TokenDecoder.bytePiece("<0xG0>") == nil && TokenDecoder.bytePiece("<0x0>") == nil)
    }

    @Test func normalizerStepsRunPerPieceBetweenAddedTokens() throws {
        let normalizer = #"{"type":"Sequence","normalizers":[{"type":"Strip","strip_left":false,"strip_right":true},{"type":"Replace","pattern":{"String":"x"},"content":"ab"}]}"#
        let tokenizer = try HandMadeUnigram.tokenizer(HandMadeUnigram.json(normalizer: normalizer))
        #expect(tokens(tokenizer, "x   <extra_id_0>cx") == ["▁ab", "<extra_id_0>", "▁", "c", "ab"])
    }

    // MARK: Malformed files: clear errors, never a crash

    static let malformed: [(String, String, String)] = [
        ("not JSON", "{", "not valid tokenizer JSON"),
        ("BPE model", HandMadeUnigram.json(model: #"{"type":"BPE","vocab":{},"merges":[]}"#), "only SentencePiece Unigram"),
        ("no unk_id", HandMadeUnigram.json(model: #"{"type":"Unigram","unk_id":null,"vocab":[["a",0]]}"#), "unk_id"),
        ("unk_id outside", HandMadeUnigram.json(model: #"{"type":"Unigram","unk_id":5,"vocab":[["a",0]]}"#), "outside"),
        ("empty vocab", HandMadeUnigram.json(model: #"{"type":"Unigram","unk_id":0,"vocab":[]}"#), "empty"),
        ("vocab entry", HandMadeUnigram.json(model: #"{"type":"Unigram","unk_id":0,"vocab":[["a"]]}"#), "entry 0"),
        ("huge unk_id", HandMadeUnigram.json(model: #"{"type":"Unigram","unk_id":1e300,"vocab":[["a",0]]}"#), "unk_id"),
        ("regex replace", HandMadeUnigram.json(normalizer: #"{"type":"Replace","pattern":{"Regex":" {2,}"},"content":"▁"}"#), "regular expression"),
        ("NFKC", HandMadeUnigram.json(normalizer: #"{"type":"NFKC"}"#), "NFKC"),
        ("bad base64", HandMadeUnigram.json(normalizer: #"{"type":"Precompiled","precompiled_charsmap":"!!"}"#), "base64"),
        ("short charsmap", HandMadeUnigram.json(normalizer: #"{"type":"Precompiled","precompiled_charsmap":"AAA="}"#), "header"),
        ("charsmap trie past end", HandMadeUnigram.json(normalizer: #"{"type":"Precompiled","precompiled_charsmap":"/w8AAAAAAAA="}"#), "trie"),
        ("prepend first", HandMadeUnigram.json(preTokenizer: #"{"type":"Metaspace","replacement":"▁","prepend_scheme":"first"}"#), "first"),
        ("two-char replacement", HandMadeUnigram.json(decoder: #"{"type":"Metaspace","replacement":"__"}"#), "single character"),
        ("deep sequence", HandMadeUnigram.json(normalizer: String(repeating: #"{"type":"Sequence","normalizers":["#, count: 20) + "]}" + String(repeating: "]}", count: 19)), "nested"),
        ("truncation", HandMadeUnigram.json(extra: #""truncation":{"max_length":5},"#), "truncation"),
        ("bad template", HandMadeUnigram.json(extra: "").replacingOccurrences(of: #""ids":[1]"#, with: #""ids":[-3]"#), "invalid id"),
        ("bool as string", HandMadeUnigram.json(model: #"{"type":"Unigram","unk_id":0,"vocab":[["a",0]],"byte_fallback":"yes"}"#), "byte_fallback"),
    ]

    @Test(arguments: malformed.indices)
    func malformedFileIsRefusedClearly(index: Int) {
        let (name, json, expected) = Self.malformed[index]
        do {
            _ = try HandMadeUnigram.tokenizer(json)
            Issue.record("\(name): accepted")
        } catch let error as TokenizerError {
            #expect(error.description.contains(expected), "\(name): \(error.description)")
        } catch {
            Issue.record("\(name): unexpected \(error)")
        }
    }

    @Test func missingEosTokenIsRefused() {
        #expect(throws: TokenizerError.missingSpecialToken(role: "eos", token: "<eos>")) {
            try T5Tokenizer(T5TokenizerData(tokenizerJSON: HandMadeUnigram.json(), eosToken: "<eos>"))
        }
    }

    @Test func folderWithOnlySpieceModelSaysSo() throws {
        let folder = try makeTemporaryFolder(["spiece.model": "x"])
        defer { try? FileManager.default.removeItem(at: folder) }
        do {
            _ = try T5TokenizerData.load(huggingFaceFolder: folder)
            Issue.record("accepted a folder without tokenizer.json")
        } catch let error as TokenizerError {
            #expect(error.description.contains("spiece.model alone is not read"))
        }
    }

    @Test func configNamesTheSpecialTokens() throws {
        let folder = try makeTemporaryFolder([
            "tokenizer.json": HandMadeUnigram.json(),
            "tokenizer_config.json": #"{"eos_token": {"content": "<extra_id_0>"}, "pad_token": null, "unk_token": "<unk>"}"#,
        ])
        defer { try? FileManager.default.removeItem(at: folder) }
        let tokenizer = try T5Tokenizer(try T5TokenizerData.load(huggingFaceFolder: folder))
        #expect(tokenizer.eosTokenId == 16 && tokenizer.padTokenId == nil && tokenizer.unkTokenId == 2)
    }

    /// A charsmap whose trie points outside itself, or whose replacement offsets run past its strings, normalizes
    /// without reading out of bounds.
    @Test func hostileCharsmapNeverReadsOutOfBounds() throws {
        var blob: [UInt8] = [8, 0, 0, 0]
        // Unit 0 sends the first byte to a far position; unit 1 claims label "a" with a leaf and a huge offset.
        blob += [0xFF, 0xFF, 0xFF, 0x7F, 0x61, 0x01, 0xFF, 0xFF]
        blob += Array("x\0".utf8)
        let charsmap = try PrecompiledCharsmap(blob: blob)
        for text in ["a", "ab", "ﬁ", "😀", "\u{0}a", ""] {
            _ = charsmap.normalize(text[...])
        }
    }
}
