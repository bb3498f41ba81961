import Foundation
import Testing
@testable import Blip2Tokenizer

/// Loading rules and BPE edge cases on tiny Hugging Face folders; `transformers`' answers for each
/// folder are in Tests/Fixtures/tokenizer/tiny_folders.json.
@Suite("Tiny tokenizer folders")
struct TinyFolderTests {
    static let folders: [TinyFolders.Folder] = (try? Fixtures.load("tiny_folders.json", as: TinyFolders.self).folders) ?? []

    @Test func fixtureIsPresent() {
        #expect(Self.folders.count >= 10)
    }

    @Test(arguments: Self.folders)
    func folderLoadsLikeTransformers(_ folder: TinyFolders.Folder) throws {
        let url = try makeTemporaryFolder(folder.files)
        defer { try? FileManager.default.removeItem(at: url) }

        if let expectedError = folder.error {
            #expect(throws: TokenizerError.self, "reference refused it: \(expectedError)") {
                let data = try TokenizerData.load(huggingFaceFolder: url, imageTokenIndex: nil)
                _ = try OPTTokenizer(data)
            }
            return
        }

        let data = try TokenizerData.load(huggingFaceFolder: url, imageTokenIndex: nil)
        #expect(data.addedTokens == folder.addedTokens, "\(folder.name)")
        #expect(data.bosToken == folder.bosToken)
        #expect(data.eosToken == folder.eosToken)
        #expect(data.padToken == folder.padToken)
        #expect(data.unkToken == folder.unkToken)
        #expect(data.addBosToken == folder.addBosToken)
        #expect(data.addEosToken == folder.name.hasPrefix("add_eos_token"))
        #expect(data.imageToken == folder.imageToken)

        let tokenizer = try OPTTokenizer(data)
        #expect(tokenizer.vocabularySize == folder.len)
        #expect(tokenizer.imageTokenId == folder.imageTokenId)
        for item in folder.encode ?? [] {
            #expect(tokenizer.encode(item.text) == item.ids, "\(folder.name): \(visible(item.text))")
            #expect(tokenizer.encode(item.text, addBOS: false) == item.idsNoSpecials, "\(folder.name): \(visible(item.text))")
            #expect(tokenizer.decode(item.ids) == item.decoded, "\(folder.name): \(item.ids)")
        }
        for item in folder.decode ?? [] {
            #expect(tokenizer.decode(item.ids) == item.text, "\(folder.name): \(item.ids)")
            #expect(tokenizer.decode(item.ids, skipSpecialTokens: false) == item.textKeepSpecial, "\(folder.name): \(item.ids)")
        }

        // Asking for the id the processor would pick is accepted; a different one is refused.
        if let imageId = folder.imageTokenId {
            let pinned = try TokenizerData.load(huggingFaceFolder: url, imageTokenIndex: imageId)
            #expect(pinned == data)
            #expect(throws: TokenizerError.self) {
                _ = try TokenizerData.load(huggingFaceFolder: url, imageTokenIndex: 0)
            }
        }
    }
}

extension TinyFolders.Folder: CustomTestStringConvertible {
    var testDescription: String { name }
}
