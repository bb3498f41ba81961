import Foundation
import Testing
@testable import Blip2Tokenizer

// MARK: - Where test data lives

enum TestPaths {
    /// The package root, found from this file's location (Tests/Blip2TokenizerTests/Fixtures.swift).
    static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static let fixtures = packageRoot.appendingPathComponent("Tests/Fixtures/tokenizer")

    /// `$BLIP2_SHARED_DIR`, else `../shared` next to the package root.
    static let shared: URL = {
        if let value = ProcessInfo.processInfo.environment["BLIP2_SHARED_DIR"], !value.isEmpty {
            return URL(fileURLWithPath: value)
        }
        return packageRoot.deletingLastPathComponent().appendingPathComponent("shared")
    }()

    static let optFolder = shared.appendingPathComponent("tokenizers/opt")

    static let optFilesPresent: Bool = ["vocab.json", "merges.txt", "tokenizer_config.json"].allSatisfy {
        FileManager.default.fileExists(atPath: optFolder.appendingPathComponent($0).path)
    }

    static let optMissingReason: Comment = "OPT tokenizer files not found in \(optFolder.path): set BLIP2_SHARED_DIR to the folder holding tokenizers/opt"

    /// CI sets CI=true (as GitHub Actions and most services do); there the real-tokenizer suites must run.
    static let underCI = ProcessInfo.processInfo.environment["CI"] == "true"
}

/// The suites that need the real OPT files skip, visibly, where the files are absent; under CI a skip
/// would hide that parity was never checked, so it is a failure.
@Suite struct SharedTokenizerFilesTests {
    @Test func presentWhenRunningUnderCI() {
        if TestPaths.underCI && !TestPaths.optFilesPresent {
            Issue.record("CI=true but \(TestPaths.optMissingReason); the tokenizer parity suites did not run")
        }
    }
}

// MARK: - Fixture shapes (written by Tools/make_tokenizer_cases.py)

struct OPTCases: Decodable {
    struct Special: Decodable {
        var bosTokenId: Int
        var eosTokenId: Int
        var padTokenId: Int
        var unkTokenId: Int
        var imageTokenId: Int
        var len: Int
        var addedTokens: [AddedToken]
        var tokenForId: [String: String]
        enum CodingKeys: String, CodingKey {
            case bosTokenId = "bos_token_id", eosTokenId = "eos_token_id", padTokenId = "pad_token_id"
            case unkTokenId = "unk_token_id", imageTokenId = "image_token_id", len
            case addedTokens = "added_tokens", tokenForId = "token_for_id"
        }
    }
    struct Encode: Decodable {
        var name: String
        var text: String
        var ids: [Int]
        var idsNoBos: [Int]
        var tokens: [String]
        var decoded: String
        var decodedKeepSpecial: String
        var decodedStripped: String
        enum CodingKeys: String, CodingKey {
            case name, text, ids, tokens, decoded
            case idsNoBos = "ids_no_bos", decodedKeepSpecial = "decoded_keep_special", decodedStripped = "decoded_stripped"
        }
    }
    struct Decode: Decodable {
        var name: String
        var ids: [Int]
        var text: String
        var textKeepSpecial: String
        var stripped: String
        enum CodingKeys: String, CodingKey {
            case name, ids, text, stripped
            case textKeepSpecial = "text_keep_special"
        }
    }
    struct Processor: Decodable {
        var prompt: String
        var numQueryTokens: Int
        var ids: [Int]
        enum CodingKeys: String, CodingKey {
            case prompt, ids
            case numQueryTokens = "num_query_tokens"
        }
    }

    var tokenizer: Special
    var pythonIsspace: [UInt32]
    var encode: [Encode]
    var decode: [Decode]
    var processor: [Processor]
    enum CodingKeys: String, CodingKey {
        case tokenizer, encode, decode, processor
        case pythonIsspace = "python_isspace"
    }
}

struct PretokenizerClasses: Decodable {
    var ranges: [[RangeField]]

    enum RangeField: Decodable {
        case number(UInt32)
        case kind(String)
        init(from decoder: Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let value = try? container.decode(UInt32.self) {
                self = .number(value)
            } else {
                self = .kind(try container.decode(String.self))
            }
        }
    }
}

struct TinyFolders: Decodable {
    struct Folder: Decodable {
        struct Encode: Decodable {
            var text: String
            var ids: [Int]
            var idsNoSpecials: [Int]
            var decoded: String
            enum CodingKeys: String, CodingKey {
                case text, ids, decoded
                case idsNoSpecials = "ids_no_specials"
            }
        }
        struct Decode: Decodable {
            var ids: [Int]
            var text: String
            var textKeepSpecial: String
            enum CodingKeys: String, CodingKey {
                case ids, text
                case textKeepSpecial = "text_keep_special"
            }
        }
        var name: String
        var files: [String: String]
        var error: String?
        var imageTokenId: Int?
        var imageToken: String?
        var bosToken: String?
        var eosToken: String?
        var padToken: String?
        var unkToken: String?
        var addBosToken: Bool?
        var len: Int?
        var addedTokens: [AddedToken]?
        var encode: [Encode]?
        var decode: [Decode]?
        enum CodingKeys: String, CodingKey {
            case name, files, error, len, encode, decode
            case imageTokenId = "image_token_id", imageToken = "image_token", bosToken = "bos_token"
            case eosToken = "eos_token", padToken = "pad_token", unkToken = "unk_token"
            case addBosToken = "add_bos_token", addedTokens = "added_tokens"
        }
    }
    var folders: [Folder]
}

enum Fixtures {
    static func load<T: Decodable>(_ name: String, as type: T.Type) throws -> T {
        let data = try Data(contentsOf: TestPaths.fixtures.appendingPathComponent(name))
        return try JSONDecoder().decode(T.self, from: data)
    }

    static let opt: OPTCases? = try? load("opt_cases.json", as: OPTCases.self)
}

/// One tokenizer for the real OPT files, shared by all tests (building it takes a moment in debug builds).
enum SharedOPT {
    static let result: Result<OPTTokenizer, Error> = Result {
        let data = try TokenizerData.load(huggingFaceFolder: TestPaths.optFolder, imageTokenIndex: 50265)
        return try OPTTokenizer(data)
    }
}

/// A fresh temporary folder holding `files`; removed by the caller.
func makeTemporaryFolder(_ files: [String: String]) throws -> URL {
    let folder = FileManager.default.temporaryDirectory
        .appendingPathComponent("blip2-tokenizer-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    for (name, content) in files {
        try Data(content.utf8).write(to: folder.appendingPathComponent(name))
    }
    return folder
}

/// Shows control characters and invisible scalars in failure messages.
func visible(_ text: String) -> String {
    text.unicodeScalars.map { scalar in
        scalar.isASCII && scalar.value >= 0x20 && scalar.value < 0x7F ? String(scalar) : "\\u{\(String(scalar.value, radix: 16))}"
    }.joined()
}
