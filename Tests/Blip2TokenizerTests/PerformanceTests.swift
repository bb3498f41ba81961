import Foundation
import Testing
@testable import Blip2Tokenizer

/// Timings on the real files, printed for whoever runs the suite. No bound is enforced: how fast a shared or
/// slow machine runs a test is no property of the tokenizer (none of these times is a stated goal), and the
/// encoding is still checked against the reference ids on every run.
@Suite("Tokenizer speed", .enabled(if: TestPaths.optFilesPresent, TestPaths.optMissingReason))
struct PerformanceTests {
    static func seconds(_ body: () throws -> Void) rethrows -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    @Test func loadingTheRealFiles() throws {
        var best = Double.infinity
        var bestBuild = Double.infinity
        var data: TokenizerData?
        for _ in 0..<3 {
            best = min(best, try Self.seconds {
                data = try TokenizerData.load(huggingFaceFolder: TestPaths.optFolder, imageTokenIndex: 50265)
            })
            let loaded = try #require(data)
            bestBuild = min(bestBuild, try Self.seconds { _ = try OPTTokenizer(loaded) })
        }
        let json = try JSONEncoder().encode(try #require(data))
        let fromJSON = try Self.seconds { _ = try JSONDecoder().decode(TokenizerData.self, from: json) }
        print("tokenizer load: read+validate folder \(Int(best * 1000)) ms, build tables \(Int(bestBuild * 1000)) ms, TokenizerData from model-file JSON (\(json.count) bytes) \(Int(fromJSON * 1000)) ms")
    }

    @Test func encodingAFewHundredWords() throws {
        let tokenizer = try SharedOPT.result.get()
        let cases = try #require(Fixtures.opt)
        let paragraph = try #require(cases.encode.first { $0.name == "long paragraph" })
        let words = paragraph.text.split(separator: " ").count
        _ = tokenizer.encode(paragraph.text)  // warm the word cache
        var best = Double.infinity
        for _ in 0..<200 {
            best = min(best, Self.seconds { #expect(tokenizer.encode(paragraph.text) == paragraph.ids) })
        }
        var cold = Double.infinity
        let other = cases.encode.filter { $0.name.hasPrefix("random") }.map(\.text).joined(separator: " ")
        cold = Self.seconds { _ = tokenizer.encode(other) }
        let decodeTime = Self.seconds { for _ in 0..<100 { _ = tokenizer.decode(paragraph.ids) } } / 100
        print("tokenizer encode: \(words) words / \(paragraph.ids.count) tokens in \(Int(best * 1e6)) µs warm; \(other.utf8.count) bytes of mostly unseen text in \(Int(cold * 1e6)) µs; decode \(Int(decodeTime * 1e6)) µs")
    }
}
