import Foundation
import Testing
@testable import Blip2Tokenizer

/// Encode/decode parity with `transformers` on the real OPT files; expected values come from
/// Tools/make_tokenizer_cases.py.
@Suite("OPT tokenizer parity with transformers", .enabled(if: TestPaths.optFilesPresent, TestPaths.optMissingReason))
struct OPTParityTests {
    let tokenizer: OPTTokenizer
    let cases: OPTCases

    init() throws {
        tokenizer = try SharedOPT.result.get()
        cases = try #require(Fixtures.opt, "Tests/Fixtures/tokenizer/opt_cases.json is missing or unreadable")
    }

    @Test func specialTokenIds() {
        let expected = cases.tokenizer
        #expect(tokenizer.bosTokenId == expected.bosTokenId)
        #expect(tokenizer.eosTokenId == expected.eosTokenId)
        #expect(tokenizer.padTokenId == expected.padTokenId)
        #expect(tokenizer.unkTokenId == expected.unkTokenId)
        #expect(tokenizer.imageTokenId == expected.imageTokenId)
        #expect(tokenizer.vocabularySize == expected.len)
        #expect(tokenizer.addedTokens == expected.addedTokens)
        for (id, token) in expected.tokenForId {
            #expect(tokenizer.token(for: Int(id)!) == token, "id \(id)")
            #expect(tokenizer.id(for: token) == Int(id)!, "token \(token)")
        }
        #expect(tokenizer.token(for: 50266) == nil)
        #expect(tokenizer.token(for: -1) == nil)
    }

    /// The checks listed in shared/tokenizers/opt/SOURCE.md, typed in from that document.
    @Test func documentedChecks() {
        #expect(tokenizer.encode("Hello") == [2, 31414])
        #expect(tokenizer.encode(" the", addBOS: false) == [5])
        #expect(tokenizer.encode("a photo of") == [2, 102, 1345, 9])
        #expect(tokenizer.encode("A photo of a cat") == [2, 250, 1345, 9, 10, 4758])
        #expect(tokenizer.encode("Question: which city is this? Answer:") == [2, 45641, 35, 61, 343, 16, 42, 116, 31652, 35])
        #expect(tokenizer.encode("a woman sitting on the beach with a dog") == [2, 102, 693, 2828, 15, 5, 4105, 19, 10, 2335])
        #expect(tokenizer.encode(" it's not a city, it's a beach\n", addBOS: false)
            == [24, 18, 45, 10, 343, 6, 24, 18, 10, 4105, 50118])
        #expect(tokenizer.id(for: "bos") == 31957)
    }

    @Test func encodeMatchesReference() {
        var failures = 0
        for item in cases.encode {
            let withBOS = tokenizer.encode(item.text)
            let withoutBOS = tokenizer.encode(item.text, addBOS: false)
            #expect(withBOS == item.ids, "\(item.name): \(visible(item.text))")
            #expect(withoutBOS == item.idsNoBos, "\(item.name): \(visible(item.text))")
            #expect(withoutBOS.map { tokenizer.token(for: $0) ?? "?" } == item.tokens, "\(item.name)")
            if withBOS != item.ids { failures += 1 }
        }
        #expect(cases.encode.count > 500)
        #expect(failures == 0)
    }

    @Test func decodeOfEncodedTextMatchesReference() {
        for item in cases.encode {
            #expect(tokenizer.decode(item.ids) == item.decoded, "\(item.name)")
            #expect(tokenizer.decode(item.ids, skipSpecialTokens: false) == item.decodedKeepSpecial, "\(item.name)")
            #expect(tokenizer.decodeStripped(item.ids) == item.decodedStripped, "\(item.name)")
        }
    }

    @Test func decodeMatchesReference() {
        for item in cases.decode {
            #expect(tokenizer.decode(item.ids) == item.text, "\(item.name): \(visible(tokenizer.decode(item.ids))) vs \(visible(item.text))")
            #expect(tokenizer.decode(item.ids, skipSpecialTokens: false) == item.textKeepSpecial, "\(item.name)")
            #expect(tokenizer.decodeStripped(item.ids) == item.stripped, "\(item.name)")
        }
    }

    @Test func processorInputIds() throws {
        for item in cases.processor {
            #expect(try tokenizer.encode(item.prompt, imageTokenCount: item.numQueryTokens) == item.ids, "\(item.prompt)")
        }
    }

    @Test func negativeAndHugeIdsAreSkipped() {
        #expect(tokenizer.decode([-1, Int.min, 31414, Int.max, 1 << 40]) == "Hello")
        #expect(!tokenizer.isSpecial(-5))
        #expect(tokenizer.isSpecial(2) && tokenizer.isSpecial(1) && tokenizer.isSpecial(50265))
        #expect(!tokenizer.isSpecial(0) && !tokenizer.isSpecial(50264))  // <s> and <mask> are plain vocabulary for OPT
    }

    @Test func concurrentEncodesAgree() async {
        let texts = cases.encode.prefix(120).map(\.text)
        let expected = cases.encode.prefix(120).map(\.ids)
        let tokenizer = self.tokenizer
        await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    zip(texts, expected).allSatisfy { tokenizer.encode($0) == $1 }
                }
            }
            for await agreed in group { #expect(agreed) }
        }
    }
}

@Suite("Reference character classes")
struct CharacterClassTests {
    /// Every Unicode scalar is classified as the reference's regex engine sees it.
    @Test func everyScalarMatchesThePreTokenizer() throws {
        let fixture = try Fixtures.load("pretokenizer_classes.json", as: PretokenizerClasses.self)
        var mismatches: [String] = []
        var checked = 0
        for entry in fixture.ranges {
            guard entry.count == 3, case let .number(low) = entry[0], case let .number(high) = entry[1],
                  case let .kind(kind) = entry[2] else {
                Issue.record("malformed range entry")
                continue
            }
            let expected: ScalarClass
            switch kind {
            case "L": expected = .letter
            case "N": expected = .number
            case "S": expected = .whitespace
            default: expected = .other
            }
            for value in low...high {
                checked += 1
                let actual = value < 0x80 ? PreTokenizer.asciiClass[Int(value)] : ScalarClassifier.classOf(value)
                if actual != expected, mismatches.count < 20 {
                    mismatches.append("U+\(String(value, radix: 16, uppercase: true)) expected \(expected) got \(actual)")
                }
            }
        }
        #expect(checked == 0x110000 - 0x800)
        #expect(mismatches.isEmpty, "\(mismatches)")
    }

    /// Python's `str.isspace()` set, which `.strip()` uses.
    @Test func pythonWhitespaceSet() throws {
        let cases = try #require(Fixtures.opt)
        let expected = Set(cases.pythonIsspace)
        var actual = Set<UInt32>()
        for value in UInt32(0)..<0x110000 {
            if let scalar = Unicode.Scalar(value), OPTTokenizer.isPythonWhitespace(scalar) { actual.insert(value) }
        }
        #expect(actual == expected)
    }
}
