import Blip2Generation
import Blip2Models
import Blip2Tokenizer

// MARK: - Starting a generation, for OPT or T5
//
// OPT continues the image embeddings and the prompt in one causal sequence; the generation strategies see
// the ids transformers passes as input_ids (the `<image>` placeholders, BOS, the prompt). T5 reads them with
// its encoder and generates in its decoder, which starts from decoder_start_token_id: for it transformers'
// strategies see only the decoder's ids, so the logits processors (repetition penalty, n-gram blocking) count
// the start token and the generated ones, and beam lengths count from after the start token.

extension Pipeline {
    /// A decoder state that has consumed the image embeddings and `promptIds`, with room for `newTokens`, and
    /// the ids the generation strategies must treat as its context.
    func startState(image: EncodedImage, promptIds: [Int], newTokens: Int) throws -> (state: any DecoderState, contextIds: [Int]) {
        if model.isEncoderDecoder {
            let state = try T5State(model: model, scheduler: scheduler, encoderInput: image.embeddings + model.tokenEmbeddings(promptIds),
                                    newTokens: newTokens)
            return (state, [state.session.startTokenId])
        }
        // Decoding never feeds the last generated token, so this is exactly enough.
        let state = try makeState(capacity: numQueryTokens + promptIds.count + newTokens)
        try start(state, from: image, prompt: promptIds)
        return (state, contextIds(promptIds: promptIds))
    }

    /// Runs a generation's decoding: OPT's joins the scheduler's shared steps; T5's steps run alone, each
    /// between two shared steps (its decoder has no batched step yet), so it never joins.
    func decodingSteps<T>(_ body: () throws -> T) rethrows -> T {
        model.isEncoderDecoder ? try body() : try scheduler.decoding(body)
    }

    /// T5: the image embeddings and the prompt must fit the encoder's context; the decoder holds the start token
    /// and the new tokens, within as many positions (its cache is sized by them: 0.4 MB a position for Flan-T5-XL).
    func checkEncoderFits(promptIds: [Int], maxNewTokens: Int) throws {
        let needed = numQueryTokens + promptIds.count
        guard needed <= contextLimit else {
            throw PipelineError("the prompt is \(promptIds.count) tokens; with \(numQueryTokens) image embeddings that is \(needed), over the \(contextLimit)-token encoder context: shorten it",
                                overflow: ContextOverflow(promptTokens: promptIds.count, imageTokens: numQueryTokens,
                                                          maxNewTokens: maxNewTokens, contextLimit: contextLimit))
        }
        guard 1 + maxNewTokens <= contextLimit else {
            // In the decoder's terms: its one-token prompt (the start token), no image embeddings.
            throw PipelineError("\(maxNewTokens) new tokens do not fit the decoder's \(contextLimit) positions after its start token: at most \(contextLimit - 1)",
                                overflow: ContextOverflow(promptTokens: 1, imageTokens: 0, maxNewTokens: maxNewTokens, contextLimit: contextLimit))
        }
    }
}

/// T5's decoder as the generation strategies see it. Its model work (the encoder, each decoder step) runs
/// through the pipeline's scheduler alone, between the shared steps of other generations.
final class T5State: DecoderState {
    let session: T5Session
    let scheduler: StepScheduler

    init(model: Blip2Model, scheduler: StepScheduler, encoderInput: [Float], newTokens: Int) throws {
        self.scheduler = scheduler
        // The start token, then every generated token but the last, which is never fed.
        session = try scheduler.exclusive {
            try model.makeT5Session(encoderInput: encoderInput, decoderCapacity: 1 + max(newTokens, 1))
        }
    }

    private init(session: T5Session, scheduler: StepScheduler) {
        self.session = session
        self.scheduler = scheduler
    }

    var logits: [Float] { session.logits }
    func append(_ token: Int) throws { try scheduler.exclusive { try session.append(token) } }
    func fork() throws -> T5State { T5State(session: session.fork(), scheduler: scheduler) }
}

/// Streamed text for either tokenizer: OPT's byte-level decoder holds back partial characters byte by byte;
/// any other tokenizer goes through `TextStreamDecoder`. Both strip as `decodeStripped` does.
struct StreamingText {
    private var opt: TokenStreamDecoder?
    private var text: TextStreamDecoder?

    init(tokenizer: any TextTokenizer) {
        if let tokenizer = tokenizer as? OPTTokenizer {
            opt = TokenStreamDecoder(tokenizer: tokenizer, stripWhitespace: true)
        } else {
            text = TextStreamDecoder(tokenizer: tokenizer, stripWhitespace: true)
        }
    }

    mutating func append(_ ids: [Int]) -> String {
        if opt != nil { return opt!.append(contentsOf: ids) }
        return ids.map { text!.append($0) }.joined()
    }

    mutating func finish() -> String { opt?.finish() ?? text!.finish() }
}
