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
    /// Feeds `tokens[i]` to `states[i]` (distinct states), leaving each exactly as `append` would. A model
    /// that can runs them as one step, reading its weights once for all the sequences.
    static func append(_ tokens: [Int], to states: [Self]) throws
    /// A copy of this state, made in `spare`'s memory when given (a state the caller no longer needs).
    func fork(into spare: Self?) throws -> Self
}

extension DecoderState {
    public static func append(_ tokens: [Int], to states: [Self]) throws {
        precondition(tokens.count == states.count, "one token per state")
        for (state, token) in zip(states, tokens) { try state.append(token) }
    }

    public func fork(into spare: Self?) throws -> Self { try fork() }
}
