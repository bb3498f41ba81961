import Blip2Compute
import Blip2Configs
import Blip2Generation
import Blip2Image
import Blip2Models
import Blip2ModelFile
import Blip2Tokenizer
import Foundation

// MARK: - Pipeline: image + prompt in, text out
//
// Everything comes from the model file: the configs, the preprocessing parameters and the tokenizer.

public struct PipelineError: Error, CustomStringConvertible {
    public let message: String
    /// Set when the prompt and the tokens to generate do not fit the context, so that a caller can say so in
    /// its own words (a server names its request fields, not the command line's flags).
    public let overflow: ContextOverflow?
    public init(_ message: String, overflow: ContextOverflow? = nil) {
        self.message = message
        self.overflow = overflow
    }
    public var description: String { message }
}

/// Token counts of a prompt that does not fit the context.
public struct ContextOverflow: Sendable, Equatable {
    public var promptTokens: Int
    public var imageTokens: Int
    public var maxNewTokens: Int
    public var contextLimit: Int
    /// Whether the prompt leaves room for a new token at all (if not, a lower max-new-tokens cannot help).
    public var promptFits: Bool { imageTokens + promptTokens < contextLimit }
}

/// Milliseconds per stage.
public struct StageTimings: Codable, Sendable {
    public var imageDecode: Double?
    public var preprocess: Double?
    public var vision: Double?
    public var qformer: Double?
    public var prefill: Double?
    public var generate: Double?
    public var total: Double?

    enum CodingKeys: String, CodingKey {
        case imageDecode = "image_decode", preprocess, vision, qformer = "qformer_projection", prefill, generate, total
    }
    public init() {}

    /// Written to the microsecond (`24.752`, not `24.752421000000002`): the clock's nanoseconds are noise
    /// next to a stage's run-to-run spread.
    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        for (value, key) in [(imageDecode, CodingKeys.imageDecode), (preprocess, .preprocess), (vision, .vision), (qformer, .qformer),
                             (prefill, .prefill), (generate, .generate), (total, .total)] {
            try container.encodeIfPresent(value.map(roundedMilliseconds), forKey: key)
        }
    }
}

/// Milliseconds rounded to 0.001 for JSON output.
public func roundedMilliseconds(_ milliseconds: Double) -> Double {
    (milliseconds * 1000).rounded() / 1000
}

/// Times a closure in milliseconds.
@inline(__always)
func measure<T>(_ milliseconds: inout Double?, _ body: () throws -> T) rethrows -> T {
    let start = DispatchTime.now().uptimeNanoseconds
    defer { milliseconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6 }
    return try body()
}

/// The projected query embeddings of one image, ready to start any number of prompts from.
public struct EncodedImage: Sendable {
    public let embeddings: [Float]
    public var timings: StageTimings
    /// The language model's positions for `embeddings`, once a prompt has computed them.
    let prefix = ImagePrefix()

    init(embeddings: [Float], timings: StageTimings) {
        self.embeddings = embeddings
        self.timings = timings
    }
}

/// An image's positions in the language model (its query embeddings run through every layer), kept so the
/// next prompt about the same image copies them instead of computing them again: a kiosk's visitors asking
/// about one frame, chat turns, a server's cached uploads. A prompt fed after kept positions gets exactly the
/// values of a fresh prefill: that one runs the image's rows and the prompt's in one pass, but tiles them as
/// two passes would.
// @unchecked Sendable: the kept session is behind its lock, and only read once kept.
final class ImagePrefix: @unchecked Sendable {
    private let lock = NSLock()
    private var session: LanguageSession?

    var kept: LanguageSession? { lock.withLock { session } }

    func keep(_ computed: LanguageSession) { lock.withLock { if session == nil { session = computed } } }

    func drop() { lock.withLock { session = nil } }
}

/// Which images have their prefix kept: the most recent few (OPT-2.7B: 21 MB each), the rest dropped.
// @unchecked Sendable: its list is behind its lock.
final class ImagePrefixes: @unchecked Sendable {
    private let lock = NSLock()
    private var recent: [ImagePrefix] = []
    let capacity: Int

    init(capacity: Int) { self.capacity = capacity }

    /// Marks `prefix` the most recently used; the least recently used beyond `capacity` drops its positions.
    func used(_ prefix: ImagePrefix) {
        let evicted: ImagePrefix? = lock.withLock {
            recent.removeAll { $0 === prefix }
            recent.append(prefix)
            return recent.count > capacity ? recent.removeFirst() : nil
        }
        evicted?.drop()
    }
}

// @unchecked Sendable: as Blip2Model: immutable after loading but for the model's buffers, one forward at a time.
public final class Pipeline: @unchecked Sendable {
    public let model: Blip2Model
    /// OPT's byte-level BPE or T5's SentencePiece Unigram, as the model file carries.
    public let tokenizer: any TextTokenizer
    public let preprocessor: ImagePreprocessor
    public let imageOptions: ImageDecodeOptions
    /// Context limit for prompts: the BLIP-2 walkthrough's 512, or less if the model has fewer positions.
    public let contextLimit: Int
    /// Every use of the model goes through it, so generations on several threads share decode steps.
    public let scheduler = StepScheduler()
    /// Images whose language-model positions are kept for their next prompt.
    let prefixes = ImagePrefixes(capacity: 4)

    public static let defaultContextLimit = 512

    /// Loads a model file. `compute` (kernels, threads, scratch) defaults to a context of its own with every
    /// core and the instruction set `BLIP2_ISA` names (the best one when unset).
    public init(modelPath: String, imageOptions: ImageDecodeOptions = ImageDecodeOptions(), compute: ComputeContext? = nil) throws {
        let compute = try compute ?? ComputeContext.fromEnvironment()
        let file = try ModelFile(path: modelPath)
        model = try Blip2Model(file: file, compute: compute)
        do {
            tokenizer = model.isEncoderDecoder
                ? try T5Tokenizer(try file.decode(T5TokenizerData.self, section: MetadataSectionName.t5Tokenizer))
                : try OPTTokenizer(try file.decode(TokenizerData.self, section: MetadataSectionName.tokenizer))
        } catch {
            throw PipelineError("\(modelPath): the tokenizer in the model file is invalid: \(error)")
        }
        guard let section = file.section(named: MetadataSectionName.preprocessorConfig) else {
            throw PipelineError("\(modelPath): the model file has no preprocessor_config; convert the checkpoint again")
        }
        preprocessor = try ImagePreprocessor.checked(json: Data(section.json), name: "\(modelPath): metadata section 'preprocessor_config'",
                                                     side: model.imageSize)
        self.imageOptions = imageOptions
        contextLimit = min(Self.defaultContextLimit, model.maxPositions)
    }

    public var numQueryTokens: Int { model.numQueryTokens }

    /// Puts `image`'s positions and then the prompt's into the fresh `state`. The image's are copied when
    /// kept from an earlier prompt (the prompt then follows as a feed of its own), else computed together
    /// with the prompt's in one pass over the weights, tiled as the two passes would be, and kept.
    func start(_ state: SessionState, from image: EncodedImage, prompt ids: [Int]) throws {
        precondition(state.session.length == 0, "an image starts a sequence")
        if let kept = image.prefix.kept, !ids.isEmpty {
            state.session.copy(from: kept)
            prefixes.used(image.prefix)
            return try state.feed(ids)
        }
        try state.feed(embeddings: image.embeddings, thenTokens: ids)
        let copy = model.makeSession(capacity: numQueryTokens)
        copy.copy(from: state.session, positions: numQueryTokens)
        image.prefix.keep(copy)
        prefixes.used(image.prefix)
    }

    /// A fresh language-model state for `capacity` positions, its model work scheduled with every other.
    func makeState(capacity: Int) throws -> SessionState {
        try SessionState(model: model, scheduler: scheduler, capacity: capacity)
    }
    public var eosTokenId: Int? { model.config.languageEOSTokenId }
    public var padTokenId: Int? { model.config.languagePadTokenId }
    public var imageTokenId: Int { model.config.imageTokenIndex ?? tokenizer.imageTokenId ?? tokenizer.vocabularySize }

    // MARK: Images

    /// Decodes and preprocesses an image file into the [3, H, W] pixel tensor.
    public func pixels(contentsOf url: URL, timings: inout StageTimings) throws -> [Float] {
        let image = try measure(&timings.imageDecode) { try ImageDecoder.decode(contentsOf: url, options: imageOptions) }
        return measure(&timings.preprocess) { preprocessor.pixelValues(for: image) }
    }

    /// Decodes and preprocesses image bytes already in memory (standard input, an upload); `name` identifies
    /// them in errors.
    public func pixels(data: Data, name: String, timings: inout StageTimings) throws -> [Float] {
        let image = try measure(&timings.imageDecode) { try ImageDecoder.decode(data: data, name: name, options: imageOptions) }
        return measure(&timings.preprocess) { preprocessor.pixelValues(for: image) }
    }

    public func encode(pixels: [Float], timings: StageTimings = StageTimings()) -> EncodedImage {
        var timings = timings
        let embeddings = scheduler.exclusive {
            let states = measure(&timings.vision) { model.visionForward(pixels: pixels) }
            return measure(&timings.qformer) { model.project(queryStates: model.qformerForward(imageStates: states)) }
        }
        return EncodedImage(embeddings: embeddings, timings: timings)
    }

    public func encodeImage(contentsOf url: URL) throws -> EncodedImage {
        var timings = StageTimings()
        let pixels = try pixels(contentsOf: url, timings: &timings)
        return encode(pixels: pixels, timings: timings)
    }

    public func encodeImage(data: Data, name: String) throws -> EncodedImage {
        var timings = StageTimings()
        let pixels = try pixels(data: data, name: name, timings: &timings)
        return encode(pixels: pixels, timings: timings)
    }

    // MARK: Prompts

    /// The prompt's ids as the processor builds them to follow the image embeddings: BOS + prompt ids (OPT),
    /// prompt ids + `</s>` (T5).
    public func promptIds(_ prompt: String?) -> [Int] {
        Self.promptIds(prompt, tokenizer: tokenizer)
    }

    public static func promptIds(_ prompt: String?, tokenizer: any TextTokenizer) -> [Int] {
        tokenizer.encode(prompt ?? "", addSpecialTokens: true)
    }

    /// What transformers passes to generate as input_ids: one `<image>` per query token, then the prompt ids.
    public func contextIds(promptIds: [Int]) -> [Int] {
        [Int](repeating: imageTokenId, count: numQueryTokens) + promptIds
    }

    /// Refuses a prompt that cannot fit the context with the tokens to generate (T5 generates in its decoder,
    /// so only the image embeddings and the prompt fill its encoder's context).
    public func checkFits(promptIds: [Int], maxNewTokens: Int) throws {
        if model.isEncoderDecoder { return try checkEncoderFits(promptIds: promptIds, maxNewTokens: maxNewTokens) }
        let needed = numQueryTokens + promptIds.count + maxNewTokens
        guard needed <= contextLimit else {
            throw PipelineError("the prompt is \(promptIds.count) tokens; with \(numQueryTokens) image embeddings and \(maxNewTokens) new tokens that is \(needed), over the \(contextLimit)-token context: shorten it or lower --max-new-tokens",
                                overflow: ContextOverflow(promptTokens: promptIds.count, imageTokens: numQueryTokens,
                                                          maxNewTokens: maxNewTokens, contextLimit: contextLimit))
        }
    }

    // MARK: Generation

    public struct Result: Sendable {
        public var sequences: [GeneratedSequence]
        public var promptIds: [Int]
        public var timings: StageTimings
        public var text: String { texts.first ?? "" }
        public var texts: [String]
    }

    /// Generates from an encoded image and a prompt. `onText` receives text pieces as tokens arrive
    /// (when `options.streamsTokens`); with `echo` the first piece is the prompt, so the pieces read as
    /// `echoedText`. `shouldStop` is asked between tokens and ends generation with `GenerationError.cancelled`
    /// when it answers true.
    public func generate(image: EncodedImage, prompt: String?, options: GenerationOptions, echo: Bool = false,
                         onText: ((String) -> Void)? = nil, shouldStop: (() -> Bool)? = nil) throws -> Result {
        let ids = promptIds(prompt)
        try checkFits(promptIds: ids, maxNewTokens: options.maxNewTokens)
        var timings = image.timings
        let (state, context) = try measure(&timings.prefill) {
            try startState(image: image, promptIds: ids, newTokens: options.maxNewTokens)
        }
        let sequences = try decode(from: state, contextIds: context, options: options,
                                   echoIds: echo ? ids : [], onText: onText, shouldStop: shouldStop, timings: &timings)
        timings.total = [timings.imageDecode, timings.preprocess, timings.vision, timings.qformer, timings.prefill, timings.generate]
            .compactMap { $0 }.reduce(0, +)
        return Result(sequences: sequences, promptIds: ids, timings: timings, texts: sequences.map { tokenizer.decodeStripped($0.tokens) })
    }

    /// The prompt and one generated sequence as one text, as a reader sees the continuation follow the prompt
    /// (`decode(prompt ids + generated ids)`, special tokens skipped).
    public func echoedText(_ result: Result, sequence index: Int = 0) -> String {
        tokenizer.decodeStripped(result.promptIds + result.sequences[index].tokens)
    }

    /// `echoIds` are streamed as text before the first generated token.
    func decode(from state: some DecoderState, contextIds: [Int], options: GenerationOptions, echoIds: [Int] = [],
                onText: ((String) -> Void)?, shouldStop: (() -> Bool)?, timings: inout StageTimings) throws -> [GeneratedSequence] {
        var options = options
        options.eosTokenId = options.eosTokenId ?? eosTokenId
        options.padTokenId = options.padTokenId ?? padTokenId
        try options.validate()
        var stream = StreamingText(tokenizer: tokenizer)
        let streaming = onText != nil && options.streamsTokens
        if streaming {
            let head = stream.append(echoIds)
            if !head.isEmpty { onText?(head) }
        }
        // Joined only now, with the prompt in the cache: a joined generation must keep stepping.
        let sequences = try measure(&timings.generate) {
            try decodingSteps { try Generator.generate(from: state, contextIds: contextIds, options: options, onToken: streaming ? { id in
                let piece = stream.append([id])
                if !piece.isEmpty { onText?(piece) }
            } : nil, shouldStop: shouldStop) }
        }
        if streaming {
            let rest = stream.finish()
            if !rest.isEmpty { onText?(rest) }
        }
        return sequences
    }

    /// The raw logits the model gives at each step of `tokens` after the prompt ([tokens.count, vocab]).
    public func stepLogits(image: EncodedImage, promptIds: [Int], tokens: [Int]) throws -> [Float] {
        let (state, _) = try startState(image: image, promptIds: promptIds, newTokens: tokens.count)
        var all: [Float] = []
        all.reserveCapacity(tokens.count * model.vocabularySize)
        try decodingSteps {
            for (i, token) in tokens.enumerated() {
                all += state.logits
                if i + 1 < tokens.count { try state.append(token) }
            }
        }
        return all
    }
}

/// The language model's state as the generation strategies see it; remembers the ids it consumed. Its
/// model work goes through the pipeline's scheduler: feeds run alone, appends as part of shared steps.
final class SessionState: DecoderState {
    let session: LanguageSession
    let scheduler: StepScheduler
    private(set) var ids: [Int] = []

    init(model: Blip2Model, scheduler: StepScheduler, capacity: Int) throws {
        guard !model.isEncoderDecoder else { throw PipelineError("a T5 model decodes through T5State, not an OPT session") }
        guard capacity <= model.maxPositions else {
            throw PipelineError("the sequence needs \(capacity) positions; the language model has \(model.maxPositions)")
        }
        session = model.makeSession(capacity: capacity)
        self.scheduler = scheduler
    }

    private init(copying other: SessionState) {
        session = other.session.fork()
        scheduler = other.scheduler
        ids = other.ids
    }

    var logits: [Float] { session.logits }

    func feed(embeddings: [Float]) throws { try scheduler.exclusive { try session.feed(embeddings: embeddings) } }

    /// An image's embeddings and then a prompt's tokens, alone, in one pass (`LanguageSession.feed(embeddings:thenTokens:)`).
    func feed(embeddings: [Float], thenTokens tokens: [Int]) throws {
        try scheduler.exclusive { try session.feed(embeddings: embeddings, thenTokens: tokens) }
        ids += tokens
    }

    /// Embeddings whose last rows are those of `ids`, in one forward pass.
    func feed(embeddings: [Float], ids tokens: [Int]) throws {
        try scheduler.exclusive { try session.feed(embeddings: embeddings) }
        ids += tokens
    }

    /// A prompt's tokens: in the next shared step when generations are decoding, else as a prefill alone.
    func feed(_ tokens: [Int]) throws { try scheduler.prompt(self, tokens: tokens) }

    /// The tokens in a forward pass of their own (the caller has the model to itself).
    func feedAlone(_ tokens: [Int]) throws {
        try session.feed(tokens: tokens)
        ids += tokens
    }

    func append(_ token: Int) throws { try scheduler.step(self, token: token) }

    func fork() throws -> SessionState { SessionState(copying: self) }

    func fork(into spare: SessionState?) throws -> SessionState {
        guard let spare, spare.session.capacity == session.capacity, spare !== self else { return try fork() }
        spare.session.copy(from: session)
        spare.ids = ids
        return spare
    }

    /// Every state's next token in the scheduler's next shared step. The states belong to one generation,
    /// which has joined the scheduler.
    static func append(_ tokens: [Int], to states: [SessionState]) throws {
        precondition(tokens.count == states.count, "one token per state")
        guard let scheduler = states.first?.scheduler else { return }
        try scheduler.step(states, tokens: tokens)
    }

    /// What `LanguageSession.step` would refuse for this state and token.
    func checkAppendable(_ token: Int) throws { try session.checkStep(token) }

    /// One step of the model for all the states (distinct): state i takes the next `counts[i]` of `tokens`
    /// (one while decoding, a prompt's several), in groups of at most `maxStepBatch` states and `maxStepRows`
    /// tokens; `sessions` is scratch the caller keeps, so a step allocates nothing once it has grown.
    static func stepTogether(_ tokens: [Int], counts: [Int], _ states: [SessionState], sessions: inout [LanguageSession]) throws {
        let mostStates = LanguageSession.maxStepBatch, mostRows = LanguageSession.maxStepRows
        var start = 0, row = 0
        while start < states.count {
            var end = start, rows = 0
            while end < states.count && end - start < mostStates && rows + counts[end] <= mostRows {
                rows += counts[end]
                end += 1
            }
            precondition(end > start, "a prompt longer than a step is fed alone")
            sessions.removeAll(keepingCapacity: true)
            for i in start..<end { sessions.append(states[i].session) }
            let whole = start == 0 && end == states.count
            let prompts = counts[start..<end].contains { $0 != 1 }
            // Past one group (rare) the later groups' tokens are copied out.
            try LanguageSession.step(sessions, tokens: whole ? tokens : Array(tokens[row..<(row + rows)]),
                                     counts: prompts ? Array(counts[start..<end]) : nil)
            var first = row
            for i in start..<end {
                states[i].ids.append(contentsOf: tokens[first..<(first + counts[i])])
                first += counts[i]
            }
            start = end
            row += rows
        }
    }

    /// Keeps the image embeddings and the first `count` ids.
    func truncate(keepingIds count: Int, imageTokens: Int) {
        session.truncate(to: imageTokens + count)
        ids.removeLast(ids.count - count)
    }
}
