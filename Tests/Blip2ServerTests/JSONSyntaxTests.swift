import Blip2Core
import Foundation
import Testing
@testable import Blip2Server

/// The place a request body stops being JSON: positions worked out by hand for each broken text, and
/// against Foundation's decoder on every prefix of well-formed texts (each strict prefix of a JSON object
/// is broken, and the walk must say so where the decoder refuses it).
@Suite("JSON syntax errors say where")
struct JSONSyntaxTests {
    @Test(arguments: [
        (#"{"a": 1,, "b": 2}"#, 8, 1, 9, "a field name in double quotes"),
        (#"{"a": tru}"#, 9, 1, 10, "true"),
        ("{\"a\":\n 1", 8, 2, 3, "',' or '}', but the body ends"),
        (#"{"a" 1}"#, 5, 1, 6, "':' after the field name"),
        (#"[1, 2] x"#, 7, 1, 8, "the end of the body after the JSON value"),
        (#"{"a": 01}"#, 7, 1, 8, "',' or '}'"),
        (#"{"a": -}"#, 7, 1, 8, "a digit"),
        (#"{"a": "\q"}"#, 8, 1, 9, #"one of \" \\ \/ \b \f \n \r \t \u after '\'"#),
        ("{\"a\": \"x\ny\"}", 8, 1, 9, "no control characters inside a string (write them as \\n, \\t or \\u00XX)"),
        ("", 0, 1, 1, "a value, but the body ends"),
        ("{'a': 1}", 1, 1, 2, "a field name in double quotes"),
    ])
    func brokenTextsAreLocated(text: String, offset: Int, line: Int, column: Int, expected: String) throws {
        let problem = try #require(JSONSyntax.firstProblem(in: Array(text.utf8)))
        #expect(problem == .init(offset: offset, line: line, column: column, expected: expected))
        // The server asks for the location only once the decoder refused the body, as it must these.
        #expect((try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))) == nil, "Foundation must refuse it too")
    }

    @Test func wellFormedTextsAndTheirPrefixes() throws {
        let texts = [
            #"{"image": "data:image/png;base64,iVBO", "beams": 3, "top_p": 0.95, "seed": 18446744073709551615}"#,
            #"{"a": [1, -2.5e+3, 0.0, true, false, null, {"b": "\u00e9\n\"q\""}], "c": {}}"#,
            "[[[[]]]]", "\"text\"", "-0", "  {\"x\" : [ ] }\n",
        ]
        for text in texts {
            let bytes = Array(text.utf8)
            #expect(JSONSyntax.firstProblem(in: bytes) == nil, "\(text)")
            #expect((try? JSONSerialization.jsonObject(with: Data(bytes), options: .fragmentsAllowed)) != nil, "\(text)")
            guard bytes.first == UInt8(ascii: "{") || bytes.first == UInt8(ascii: "[") else { continue }
            for end in 0..<bytes.count {
                let prefix = Array(bytes[..<end])
                // Whitespace after the last closing bracket makes a prefix that is complete.
                if (try? JSONSerialization.jsonObject(with: Data(prefix), options: .fragmentsAllowed)) != nil { continue }
                #expect(JSONSyntax.firstProblem(in: prefix) != nil, "prefix \(String(decoding: prefix, as: UTF8.self))")
            }
        }
    }

    @Test func deepNestingIsRefusedNotRecursedInto() throws {
        let deep = Array(repeating: UInt8(ascii: "["), count: 100_000)
        let problem = try #require(JSONSyntax.firstProblem(in: deep))
        #expect(problem.offset == JSONSyntax.maxDepth)
    }
}
