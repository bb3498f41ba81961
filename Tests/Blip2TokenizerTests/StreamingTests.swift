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
