import Blip2Compute
import Blip2Configs
import Blip2ModelFile
import Foundation

// MARK: - Model
//
// Image -> vision -> Q-Former -> language_projection -> OPT (or T5, in T5.swift). Weights are views into the model file.

// @unchecked Sendable: weights are read-only views into the mapping; the activation buffers serve one forward at a time, which every caller keeps (the pipeline's step scheduler runs one model job at a time; one caller in the CLI).
public final class Blip2Model: @unchecked Sendable {
    public let file: ModelFile
    public let config: Blip2Config
    /// Kernels, threads and scratch every stage runs on.
    public let compute: ComputeContext
    let vision: VisionModel
    let qformer: QFormerModel
    let projection: Linear                    // language_projection [text hidden, qformer hidden]
    /// The language model: OPT, or T5 when the config's text_config is one (exactly one is set).
    let language: LanguageModel?
    let t5: T5Model?
    private let widened: [UnsafeMutablePointer<Float>]

    public init(file: ModelFile, compute: ComputeContext) throws {
        self.file = file
        self.compute = compute
        let config = try file.checkedConfig()
        self.config = config
        let loader = WeightLoader(file: file)
        vision = try VisionModel(config: config.visionConfig, loader: loader)
        qformer = try QFormerModel(config: config, loader: loader)
        projection = try loader.linear("language_projection", out: config.languageHiddenSize, in: config.qformerConfig.hiddenSize)
        language = config.t5Config == nil ? try LanguageModel(config: config.textConfig, loader: loader) : nil
        t5 = try config.t5Config.map { try T5Model(config: $0, loader: loader) }
        try loader.checkComplete(against: WeightManifest(config: config))
        widened = loader.claimWidened()
    }

    deinit { for pointer in widened { pointer.deallocate() } }

    public var numQueryTokens: Int { config.numQueryTokens }
    public var vocabularySize: Int { config.languageVocabSize }
    /// OPT's learned positions; T5's relative positions have no table, so its encoder takes the context limit.
    public var maxPositions: Int { t5 == nil ? config.textConfig.maxPositionEmbeddings : Blip2Config.Limits.context }
    public var imageSize: Int { config.visionConfig.imageSize }

    // MARK: Stages (exposed for tests and timings)

    /// pixels [3, H, W] -> vision last_hidden_state [positions, vision hidden].
    public func visionForward(pixels: [Float]) -> [Float] {
        precondition(pixels.count == config.visionConfig.numChannels * imageSize * imageSize, "pixel tensor size is checked by the pipeline")
        return pixels.withUnsafeBufferPointer { vision.forward(pixels: $0.baseAddress!, compute: compute) }
    }

    /// vision states -> Q-Former last_hidden_state [queries, qformer hidden].
    public func qformerForward(imageStates: [Float]) -> [Float] {
        let tokens = imageStates.count / config.qformerConfig.encoderHiddenSize
        return imageStates.withUnsafeBufferPointer { qformer.forward(image: $0.baseAddress!, imageTokens: tokens, compute: compute) }
    }

    /// Q-Former output -> language_projection [queries, text hidden].
    public func project(queryStates: [Float]) -> [Float] {
        var out = [Float](repeating: 0, count: numQueryTokens * config.languageHiddenSize)
        queryStates.withUnsafeBufferPointer { x in
            out.withUnsafeMutableBufferPointer { compute.linear(x.baseAddress!, tokens: numQueryTokens, projection, into: $0.baseAddress!) }
        }
        return out
    }

    /// The projected query embeddings the language model starts from: [queries, text hidden].
    public func encodeImage(pixels: [Float]) -> [Float] {
        project(queryStates: qformerForward(imageStates: visionForward(pixels: pixels)))
    }

    /// Token embedding rows for ids (unchecked ids are the caller's error).
    public func tokenEmbeddings(_ ids: [Int]) -> [Float] {
        var out = [Float](repeating: 0, count: ids.count * (t5?.dModel ?? config.textConfig.embeddingDim))
        out.withUnsafeMutableBufferPointer { rows in
            if let t5 { t5.embed(ids, into: rows.baseAddress!) } else { language?.embed(ids, into: rows.baseAddress!) }
        }
        return out
    }

    public func makeSession(capacity: Int? = nil) -> LanguageSession {
        precondition(language != nil, "a T5 model decodes through makeT5Session")
        return LanguageSession(model: self, capacity: min(capacity ?? maxPositions, maxPositions))
    }
}

/// One running sequence: a KV cache and the logits for the next token.
// @unchecked Sendable: one sequence's cache: used by one generation at a time, handed between threads only with it.
public final class LanguageSession: @unchecked Sendable {
    let model: Blip2Model
    let cache: KVCache
    public private(set) var logits: [Float]
    /// Embedding rows of the ids being fed, reused: decoding one token allocates nothing.
    private var embeddings: [Float] = []

    init(model: Blip2Model, capacity: Int) {
        self.model = model
        cache = KVCache(shape: Self.cacheShape(model, capacity: capacity))
        logits = [Float](repeating: 0, count: model.vocabularySize)
    }

    private static func cacheShape(_ model: Blip2Model, capacity: Int) -> KVCache.Shape {
        let text = model.config.textConfig
        return KVCache.Shape(layers: text.numHiddenLayers, heads: text.numAttentionHeads,
                             headDim: text.hiddenSize / text.numAttentionHeads, capacity: capacity)
    }

    /// Bytes the KV cache of a session holds for `capacity` positions (what a kept chat session costs).
    public static func cacheBytes(_ model: Blip2Model, capacity: Int) -> Int {
        if let t5 = model.t5 { return T5Session.cacheBytes(t5, capacity: capacity) }
        return cacheShape(model, capacity: capacity).bytes
    }

    private init(copying other: LanguageSession) {
        model = other.model
        cache = other.cache.copy()
        logits = other.logits
    }

    public var length: Int { cache.length }
    public var capacity: Int { cache.capacity }

    /// Feeds input embeddings [tokens, embed_dim]; `logits` becomes the last position's.
    public func feed(embeddings: [Float]) throws {
        let tokens = embeddings.count / model.config.textConfig.embeddingDim
        guard tokens > 0 else { return }
        guard length + tokens <= capacity else {
            throw ModelLoadError(message: "the sequence would be \(length + tokens) tokens; the language model holds \(capacity)")
        }
        embeddings.withUnsafeBufferPointer { input in run(input.baseAddress!, tokens: tokens) }
    }

    public func feed(tokens ids: [Int]) throws {
        try checkStep(ids)
        guard !ids.isEmpty else { return }
        let width = model.config.textConfig.embeddingDim
        if embeddings.count < ids.count * width { embeddings = [Float](repeating: 0, count: ids.count * width) }
        embeddings.withUnsafeMutableBufferPointer { rows in
            model.language!.embed(ids, into: rows.baseAddress!)
            run(UnsafePointer(rows.baseAddress!), tokens: ids.count)
        }
    }

    /// Feeds input embeddings [rows, embed_dim] and then the tokens `ids`, ending exactly as
    /// `feed(embeddings:)` followed by `feed(tokens:)` would (every row's products tiled as in those two
    /// passes), in one pass over the weights when the rows fit one chunk: an image and its prompt.
    public func feed(embeddings: [Float], thenTokens ids: [Int]) throws {
        let width = model.config.textConfig.embeddingDim, rows = embeddings.count / width
        try checkStep(ids)
        guard rows > 0, !ids.isEmpty else {
            try feed(embeddings: embeddings)
            return try feed(tokens: ids)
        }
        guard length + rows + ids.count <= capacity else {
            throw ModelLoadError(message: "the sequence would be \(length + rows + ids.count) tokens; the language model holds \(capacity)")
        }
        var input = embeddings
        input.append(contentsOf: repeatElement(0, count: ids.count * width))
        input.withUnsafeMutableBufferPointer { all in
            model.language!.embed(ids, into: all.baseAddress! + rows * width)
            run(UnsafePointer(all.baseAddress!), tokens: rows + ids.count, split: rows)
        }
    }

    private func run(_ input: UnsafePointer<Float>, tokens: Int, split: Int? = nil) {
        logits.withUnsafeMutableBufferPointer { out in
            model.language!.forward(input, tokens: tokens, split: split, cache: cache, logits: out.baseAddress!, compute: model.compute)
        }
    }

    /// Most rows `step` takes at once: one per decoding session, and a prompt's tokens.
    public static var maxStepRows: Int { LanguageModel.maxStepRows }
    /// Most sessions `step` takes at once.
    public static var maxStepBatch: Int { maxStepRows }

    /// Feeds `tokens[b]` to `sessions[b]` in one decode step of the model for all of them (the weights read
    /// once): each session ends as `feed(tokens: [tokens[b]])` would leave it, its logits within float
    /// rounding (many-token tiles). The sessions must be distinct and of one model; at most `maxStepBatch`.
    public static func step(_ sessions: [LanguageSession], tokens: [Int]) throws {
        try step(sessions, tokens: tokens, counts: nil)
    }

    /// As `step(_:tokens:)`, but session b takes the next `counts[b]` of `tokens` (a prompt riding on the step
    /// of sequences that decode), and ends as `feed(tokens:)` of them would leave it; at most `maxStepRows`
    /// tokens in all. Nothing changes when any session refuses its tokens.
    public static func step(_ sessions: [LanguageSession], tokens: [Int], counts: [Int]?) throws {
        guard let model = sessions.first?.model else { return }
        precondition((counts?.count ?? tokens.count) == sessions.count && (counts?.allSatisfy { $0 > 0 } ?? true)
                     && (counts?.reduce(0, +) ?? tokens.count) == tokens.count && tokens.count <= maxStepRows,
                     "one token per session (or counts[b] of them, at least one), at most maxStepRows in all")
        var first = 0
        for (b, session) in sessions.enumerated() {
            precondition(session.model === model, "sessions of one model")
            precondition(!sessions[..<b].contains { $0 === session }, "each session at most once per step")
            let count = counts?[b] ?? 1
            try session.checkStep(tokens[first..<(first + count)])
            first += count
        }
        model.language!.step(tokens: tokens, counts: counts, sessions: sessions, compute: model.compute) { b, row in
            sessions[b].logits.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: row, count: $0.count) }
        }
    }

    /// What `step` refuses for this session and token: an id outside the vocabulary, or no room left.
    public func checkStep(_ id: Int) throws {
        try checkStep(CollectionOfOne(id))
    }

    /// What `step` refuses for this session and these next tokens.
    public func checkStep(_ ids: some Collection<Int>) throws {
        for id in ids where id < 0 || id >= model.vocabularySize {
            throw ModelLoadError(message: "token id \(id) is outside the vocabulary (\(model.vocabularySize))")
        }
        guard length + ids.count <= capacity else {
            throw ModelLoadError(message: "the sequence would be \(length + ids.count) tokens; the language model holds \(capacity)")
        }
    }

    public func fork() -> LanguageSession { LanguageSession(copying: self) }

    /// Becomes a copy of `other` (same model, at most this session's capacity in use), reusing this session's
    /// memory: beam search moves a beam's state into a dropped one's instead of allocating a new cache each
    /// step, and a prompt starts from an image's positions computed once.
    public func copy(from other: LanguageSession) {
        precondition(other.model === model && other.length <= capacity, "a copy into a session that holds it")
        cache.copy(from: other.cache)
        logits.withUnsafeMutableBufferPointer { out in
            other.logits.withUnsafeBufferPointer { out.baseAddress!.update(from: $0.baseAddress!, count: $0.count) }
        }
    }

    /// Becomes a copy of `other`'s first `positions` positions (at most this session's capacity). The
    /// logits are then not those of the last position: feed a token before reading them.
    public func copy(from other: LanguageSession, positions: Int) {
        precondition(other.model === model && positions <= other.length && positions <= capacity, "a copy into a session that holds it")
        cache.copy(from: other.cache, positions: positions)
        logits.withUnsafeMutableBufferPointer { $0.update(repeating: .nan) }
    }

    /// Drops positions from `length` on; the next feed continues there.
    public func truncate(to length: Int) { cache.truncate(to: length) }
}
