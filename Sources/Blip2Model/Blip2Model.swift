import Blip2Config
import Blip2ModelFile
import Foundation

// MARK: - Model
//
// Image -> vision -> Q-Former -> language_projection -> OPT. Weights are views into the model file.

public final class Blip2Model: @unchecked Sendable {
    public let file: ModelFile
    public let config: Blip2Config
    let vision: VisionModel
    let qformer: QFormerModel
    let projection: Linear                    // language_projection [text hidden, qformer hidden]
    let language: LanguageModel
    private var widened: [UnsafeMutablePointer<Float>] = []

    public init(file: ModelFile) throws {
        self.file = file
        let config = try file.checkedConfig()
        self.config = config
        let loader = WeightLoader(file: file)
        var storage: [UnsafeMutablePointer<Float>] = []
        vision = try VisionModel(config: config.visionConfig, loader: loader, storage: &storage)
        qformer = try QFormerModel(config: config, loader: loader, storage: &storage)
        projection = try loader.linear("language_projection", out: config.textConfig.hiddenSize, in: config.qformerConfig.hiddenSize, into: &storage)
        language = try LanguageModel(config: config.textConfig, loader: loader, storage: &storage)
        widened = storage
    }

    deinit { for pointer in widened { pointer.deallocate() } }

    public var numQueryTokens: Int { config.numQueryTokens }
    public var vocabularySize: Int { config.textConfig.vocabSize }
    public var maxPositions: Int { config.textConfig.maxPositionEmbeddings }
    public var imageSize: Int { config.visionConfig.imageSize }

    // MARK: Stages (exposed for tests and timings)

    /// pixels [3, H, W] -> vision last_hidden_state [positions, vision hidden].
    public func visionForward(pixels: [Float]) -> [Float] {
        precondition(pixels.count == config.visionConfig.numChannels * imageSize * imageSize, "pixel tensor size is checked by the pipeline")
        return pixels.withUnsafeBufferPointer { vision.forward(pixels: $0.baseAddress!) }.array
    }

    /// vision states -> Q-Former last_hidden_state [queries, qformer hidden].
    public func qformerForward(imageStates: [Float]) -> [Float] {
        let tokens = imageStates.count / config.qformerConfig.encoderHiddenSize
        return imageStates.withUnsafeBufferPointer { qformer.forward(image: $0.baseAddress!, imageTokens: tokens) }.array
    }

    /// Q-Former output -> language_projection [queries, text hidden].
    public func project(queryStates: [Float]) -> [Float] {
        let out = FloatBuffer(numQueryTokens * config.textConfig.hiddenSize)
        queryStates.withUnsafeBufferPointer { MatMul.linear($0.baseAddress!, tokens: numQueryTokens, projection, into: out.pointer) }
        return out.array
    }

    /// The projected query embeddings the language model starts from: [queries, text hidden].
    public func encodeImage(pixels: [Float]) -> [Float] {
        project(queryStates: qformerForward(imageStates: visionForward(pixels: pixels)))
    }

    /// Token embedding rows for ids (unchecked ids are the caller's error).
    public func tokenEmbeddings(_ ids: [Int]) -> [Float] {
        let out = FloatBuffer(ids.count * config.textConfig.embeddingDim)
        language.embed(ids, into: out.pointer)
        return out.array
    }

    public func makeSession(capacity: Int? = nil) -> LanguageSession {
        LanguageSession(model: self, capacity: min(capacity ?? maxPositions, maxPositions))
    }
}

extension ModelFile {
    /// The `config` section, decoded and checked (`Blip2Config.check`) against the weights this file
    /// stores. Every reader of a model file takes its config from here before sizing anything by it.
    public func checkedConfig() throws -> Blip2Config {
        let source = "\(path): metadata section '\(MetadataSectionName.config)'"
        guard let section = section(named: MetadataSectionName.config) else {
            throw ModelLoadError(message: "\(source) is missing; convert the checkpoint again")
        }
        let stored = tensors.reduce(0) { total, record in
            let (sum, overflow) = total.addingReportingOverflow(record.elementCount)
            return overflow ? Int.max : sum
        }
        let config = try Blip2Config.decode(Data(section.json), source: source)
        do { try config.check(storedElements: stored) } catch let error as ConfigError {
            throw ModelLoadError(message: "\(source): \(error.message)")
        }
        return config
    }
}

/// One running sequence: a KV cache and the logits for the next token.
public final class LanguageSession: @unchecked Sendable {
    let model: Blip2Model
    let cache: KVCache
    public private(set) var logits: [Float]

    init(model: Blip2Model, capacity: Int) {
        self.model = model
        let text = model.config.textConfig
        cache = KVCache(layers: text.numHiddenLayers, heads: text.numAttentionHeads, headDim: text.hiddenSize / text.numAttentionHeads,
                        capacity: capacity)
        logits = [Float](repeating: 0, count: model.vocabularySize)
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
        embeddings.withUnsafeBufferPointer { input in
            logits.withUnsafeMutableBufferPointer { out in
                model.language.forward(input.baseAddress!, tokens: tokens, cache: cache, logits: out.baseAddress!)
            }
        }
    }

    public func feed(tokens ids: [Int]) throws {
        for id in ids where id < 0 || id >= model.vocabularySize {
            throw ModelLoadError(message: "token id \(id) is outside the vocabulary (\(model.vocabularySize))")
        }
        try feed(embeddings: model.tokenEmbeddings(ids))
    }

    public func fork() -> LanguageSession { LanguageSession(copying: self) }

    /// Drops positions from `length` on; the next feed continues there.
    public func truncate(to length: Int) { cache.truncate(to: length) }
}
