// MARK: - What every language model's tokenizer offers

/// A tokenizer the pipeline can drive without knowing its family: OPT's byte-level BPE (`OPTTokenizer`) or
/// T5's SentencePiece Unigram (`T5Tokenizer`).
public protocol TextTokenizer: AnyObject, Sendable {
    /// `len(tokenizer)`: pieces plus added tokens.
    var vocabularySize: Int { get }
    var eosTokenId: Int { get }
    var padTokenId: Int? { get }
    /// Ids for `text`, with the special tokens the tokenizer's files add (OPT: BOS in front; T5: `</s>` after)
    /// when `addSpecialTokens` is true.
    func encode(_ text: String, addSpecialTokens: Bool) -> [Int]
    /// Text for `ids`, skipping ids the tokenizer does not know, and special tokens when asked.
    func decode(_ ids: [Int], skipSpecialTokens: Bool) -> String
    func token(for id: Int) -> String?
    func id(for token: String) -> Int?
    func isSpecial(_ id: Int) -> Bool
    /// The id of the image token `Blip2Processor` repeats for the query embeddings, when the data names one.
    var imageTokenId: Int? { get }
}

extension TextTokenizer {
    /// The caption or answer text as the BLIP-2 examples produce it:
    /// `processor.batch_decode(ids, skip_special_tokens=True)[0].strip()`.
    public func decodeStripped(_ ids: [Int]) -> String {
        OPTTokenizer.stripPythonWhitespace(decode(ids, skipSpecialTokens: true))
    }
}

extension OPTTokenizer: TextTokenizer {
    public func encode(_ text: String, addSpecialTokens: Bool) -> [Int] {
        encode(text, addBOS: addSpecialTokens)
    }
}
