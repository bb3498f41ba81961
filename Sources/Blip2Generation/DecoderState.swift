// The seam between decoding strategies and a language model.

/// A language model's decoding state: everything consumed so far (image embeddings, BOS, prompt, tokens).
///
/// The generator only reads `logits`, feeds tokens with `append`, and copies the state with `fork` when
/// beam search (or sampling several sequences) needs independent continuations.
public protocol DecoderState: AnyObject {
    /// Logits for the next token, length = vocabulary size. Valid until the next `append`.
    var logits: [Float] { get }
    /// Feeds one token; afterwards `logits` is for the token after it.
    func append(_ token: Int) throws
    /// An independent copy (own KV cache) for beam search.
    func fork() throws -> Self
}
