import Foundation
import Testing
@testable import Blip2Tokenizer

@Suite("Streaming decode")
struct StreamingTests {
    @Test func incompleteTailFollowsUTF8() {
        #expect(TokenStreamDecoder.incompleteTailLength([]) == 0)
        #expect(TokenStreamDecoder.incompleteTailLength([0x41]) == 0)
        #expect(TokenStreamDecoder.incompleteTailLength([0xF0, 0x9F, 0x98]) == 3)  // 3 of 4 bytes of 😀
        #expect(TokenStreamDecoder.incompleteTailLength([0xF0, 0x9F, 0x98, 0x80]) == 0)
        #expect(TokenStreamDecoder.incompleteTailLength([0x41, 0xE6]) == 1)  // lead of 日
        #expect(TokenStreamDecoder.incompleteTailLength([0xE6, 0x97]) == 2)
        #expect(TokenStreamDecoder.incompleteTailLength([0xED, 0xA0]) == 0)  // would be a surrogate: already invalid
        #expect(TokenStreamDecoder.incompleteTailLength([0xE0, 0x80]) == 0)  // overlong: already invalid
        #expect(TokenStreamDecoder.incompleteTailLength([0xF4, 0x90]) == 0)  // above U+10FFFF: already invalid
        #expect(TokenStreamDecoder.incompleteTailLength([0xC0]) == 0)
        #expect(TokenStreamDecoder.incompleteTailLength([0x80, 0x80]) == 0)
    }

    @Test func handMadeStreamHoldsSplitCharacters() throws {
        let tokenizer = try OPTTokenizer(HandMade.data())
        let byteIds = "é😀".utf8.map { 10 + Int($0) }  // one id per byte in the hand-made vocabulary
        var stream = TokenStreamDecoder(tokenizer: tokenizer)
        var pieces: [String] = []
        for id in byteIds { pieces.append(stream.append(id)) }
        pieces.append(stream.finish())
        #expect(pieces == ["", "é", "", "", "", "😀", ""])

        var truncated = TokenStreamDecoder(tokenizer: tokenizer)
        #expect(truncated.append(contentsOf: byteIds.dropLast()) == "é")
        #expect(truncated.finish() == "\u{FFFD}")
    }

    @Test func strippedStreamDropsOuterWhitespaceOnly() throws {
        let tokenizer = try OPTTokenizer(HandMade.data())
        let ids = "  a  b \n ".utf8.map { 10 + Int($0) }
        var stream = TokenStreamDecoder(tokenizer: tokenizer, stripWhitespace: true)
        var text = ""
        for id in ids { text += stream.append(id) }
        text += stream.finish()
        #expect(text == "a  b")
    }
}

@Suite("Streaming decode of the reference cases", .enabled(if: TestPaths.optFilesPresent, TestPaths.optMissingReason))
struct StreamingParityTests {
    let tokenizer: OPTTokenizer
    let cases: OPTCases

    init() throws {
        tokenizer = try SharedOPT.result.get()
        cases = try #require(Fixtures.opt)
    }

    func stream(_ ids: [Int], strip: Bool) -> [String] {
        var decoder = TokenStreamDecoder(tokenizer: tokenizer, stripWhitespace: strip)
        var pieces = ids.map { decoder.append($0) }
        pieces.append(decoder.finish())
        return pieces
    }

    /// Streamed pieces add up to the reference's decode, and never show a replacement character
    /// that the reference's full decode does not have.
    @Test func streamedPiecesAddUpToTheReference() {
        let all = cases.decode.map { ($0.name, $0.ids, $0.text, $0.stripped) }
            + cases.encode.map { ($0.name, $0.ids, $0.decoded, $0.decodedStripped) }
        for (name, ids, text, stripped) in all {
            let pieces = stream(ids, strip: false)
            #expect(pieces.joined() == text, "\(name)")
            if !text.contains("\u{FFFD}") {
                #expect(!pieces.contains { $0.contains("\u{FFFD}") }, "\(name)")
            }
            #expect(stream(ids, strip: true).joined() == stripped, "\(name)")
        }
    }
}

@Suite("Streaming decode for any tokenizer")
struct TextStreamingTests {
    static func streamed(_ tokenizer: any TextTokenizer, _ ids: [Int], strip: Bool = false) -> [String] {
        var stream = TextStreamDecoder(tokenizer: tokenizer, stripWhitespace: strip)
        return ids.map { stream.append($0) } + [stream.finish()]
    }

    @Test func bytePiecesAreHeldUntilTheCharacterIsWhole() throws {
        let tokenizer = try T5Fixtures.tokenizer("byte_fallback")
        let bytes = "😀".utf8.map { tokenizer.id(for: String(format: "<0x%02X>", $0))! }
        let word = try #require(tokenizer.id(for: "▁the"))
        // A run of byte pieces is decoded as one (a later invalid byte would turn all of it into U+FFFD), so its
        // text comes out with the first id after the run.
        #expect(Self.streamed(tokenizer, [word] + bytes + [word]) == ["the", "", "", "", "", "😀 the", ""])
        // Cut short: the incomplete character comes out at the end, as a full decode gives it.
        #expect(Self.streamed(tokenizer, [word] + bytes.dropLast()).joined() == tokenizer.decode([word] + bytes.dropLast()))
    }

    @Test(arguments: ["nmt_nfkc", "byte_fallback"])
    func streamsEqualFullDecodes(variant: String) throws {
        let tokenizer = try T5Fixtures.tokenizer(variant)
        let cases = try #require(T5Cases.shared?.variants[variant])
        for ids in cases.encode.map(\.ids) + cases.decode.map(\.ids) {
            #expect(Self.streamed(tokenizer, ids).joined() == tokenizer.decode(ids), "\(ids)")
            #expect(Self.streamed(tokenizer, ids, strip: true).joined()
                == OPTTokenizer.stripPythonWhitespace(tokenizer.decode(ids)), "\(ids)")
        }
    }

    @Test func optThroughTheProtocolStreamsLikeItsOwnDecoder() throws {
        let tokenizer = try OPTTokenizer(HandMade.data())
        let ids = "  é😀 a \n".utf8.map { 10 + Int($0) }
        var own = TokenStreamDecoder(tokenizer: tokenizer, stripWhitespace: true)
        let expected = ids.map { own.append($0) }.joined() + own.finish()
        #expect(Self.streamed(tokenizer, ids, strip: true).joined() == expected)
        #expect(expected == "é😀 a")
    }
}
