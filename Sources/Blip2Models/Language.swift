import Blip2Compute
import Blip2Configs
import Blip2ModelFile
import Foundation
import Synchronization

// MARK: - Language: OPT decoder
//
// Input embeddings are the projected query outputs followed by embed_tokens rows; learned positions with
// OPT's offset of 2; pre-LN layers (q scaled by 1/sqrt(head_dim) before the product), causal attention
// over a KV cache; LN -> fc1 -> ReLU -> fc2; final_layer_norm; lm_head tied to embed_tokens unless stored.

final class LanguageModel {
    let config: OPTConfig
    let embedTokens: WeightMatrix                 // model.decoder.embed_tokens [vocab, embed_dim]
    let embedPositions: UnsafePointer<Float>      // model.decoder.embed_positions [max_positions + 2, hidden]
    let projectIn: Linear?                        // model.decoder.project_in [hidden, embed_dim] (only if embed_dim != hidden)
    let projectOut: Linear?                       // model.decoder.project_out [embed_dim, hidden]
    let layers: [Layer]
    let finalLayerNorm: LayerNormWeights?         // model.decoder.final_layer_norm
    let lmHead: Linear                            // lm_head [vocab, embed_dim] (= embed_tokens when tied)

    struct Layer {
        let selfAttentionNorm: LayerNormWeights   // self_attn_layer_norm
        let qkv: [Linear]                         // self_attn.{q,k,v}_proj [hidden, hidden]: one product for the three
        let outProj: Linear                       // self_attn.out_proj [hidden, hidden]
        let finalNorm: LayerNormWeights           // final_layer_norm
        let fc1: Linear                           // fc1 [ffn, hidden]
        let fc2: Linear                           // fc2 [hidden, ffn]
    }

    /// Prompts longer than this run through the layers in chunks of it, so the activations are allocated
    /// once at a fixed size. A multiple of every tile's token count (3, 4): chunking then never changes
    /// which tile a token's products run in, so the results are those of one pass.
    static let chunkTokens = 96

    /// The activations of one chunk, allocated once per model (OPT-2.7B: about 11 MB). One forward at a time.
    private struct RunState {
        let x: FloatBuffer                        // [chunk, hidden]: the residual stream
        let normed: FloatBuffer                   // [chunk, hidden]
        let qkv: FloatBuffer                      // [chunk, 3 * hidden]: [q | k | v] rows
        let context: FloatBuffer                  // [chunk, hidden]: attention output
        let ffn: FloatBuffer                      // [chunk, ffn]
        let headInput: FloatBuffer                // [chunk, embed_dim]: project_out of the rows that need logits
        let attention: UnsafeMutableBufferPointer<AttentionInput>   // [chunk]: a step's sequences, one each
        let prefixes: UnsafeMutableBufferPointer<SharedPrefix>      // [chunk]: where each reads its leading positions
    }
    /// Leading positions of a step's sequence that an earlier sequence of the same step holds alike.
    struct SharedPrefix: Equatable {
        var leader: Int
        var positions: Int
    }
    /// Whether a step's sequences read the positions they hold alike from one of them (on unless a test
    /// compares with each reading its own).
    var sharesPrefixes = true
    private let state: RunState
    /// [batch, vocab]: the logits of a decode step of several sequences, grown to the largest batch seen.
    private var batchLogits = FloatBuffer(0)
    private let lock = NSLock()

    var hidden: Int { config.hiddenSize }
    var vocabSize: Int { config.vocabSize }
    var maxPositions: Int { config.maxPositionEmbeddings }

    init(config: OPTConfig, loader: WeightLoader) throws {
        guard config.doLayerNormBefore else {
            throw ModelLoadError(message: "OPT with do_layer_norm_before = false (post-LN, as in opt-350m) is not supported")
        }
        self.config = config
        let h = config.hiddenSize, e = config.embeddingDim, bias = config.enableBias, affine = config.layerNormElementwiseAffine
        let d = "language_model.model.decoder"
        embedTokens = try loader.matrix("\(d).embed_tokens.weight", rows: config.vocabSize, cols: e)
        embedPositions = try loader.vector("\(d).embed_positions.weight", count: (config.maxPositionEmbeddings + OPTConfig.positionOffset) * h,
                                           shape: [config.maxPositionEmbeddings + OPTConfig.positionOffset, h])
        projectIn = e == h ? nil : try loader.linear("\(d).project_in", out: h, in: e, bias: false)
        projectOut = e == h ? nil : try loader.linear("\(d).project_out", out: e, in: h, bias: false)
        layers = try (0..<config.numHiddenLayers).map { i in
            let l = "\(d).layers.\(i)"
            let q = try loader.linear("\(l).self_attn.q_proj", out: h, in: h, bias: bias)
            let k = try loader.linear("\(l).self_attn.k_proj", out: h, in: h, bias: bias)
            let v = try loader.linear("\(l).self_attn.v_proj", out: h, in: h, bias: bias)
            return Layer(
                selfAttentionNorm: try loader.layerNorm("\(l).self_attn_layer_norm", dim: h, eps: 1e-5, affine: affine),
                qkv: [q, k, v],
                outProj: try loader.linear("\(l).self_attn.out_proj", out: h, in: h, bias: bias),
                finalNorm: try loader.layerNorm("\(l).final_layer_norm", dim: h, eps: 1e-5, affine: affine),
                fc1: try loader.linear("\(l).fc1", out: config.ffnDim, in: h, bias: bias),
                fc2: try loader.linear("\(l).fc2", out: h, in: config.ffnDim, bias: bias))
        }
        finalLayerNorm = config.hasFinalLayerNorm
            ? try loader.layerNorm("\(d).final_layer_norm", dim: h, eps: 1e-5, affine: affine) : nil
        let head = config.tieWordEmbeddings ? embedTokens : try loader.matrix(WeightManifest.outputHeadKey, rows: config.vocabSize, cols: e)
        lmHead = Linear(head, bias: nil)
        let chunk = Self.chunkTokens
        state = RunState(x: FloatBuffer(chunk * h), normed: FloatBuffer(chunk * h), qkv: FloatBuffer(chunk * 3 * h),
                         context: FloatBuffer(chunk * h), ffn: FloatBuffer(chunk * config.ffnDim), headInput: FloatBuffer(chunk * e),
                         attention: .allocate(capacity: chunk), prefixes: .allocate(capacity: chunk))
    }
    deinit {
        state.attention.deallocate()
        state.prefixes.deallocate()
    }

    /// Token embedding rows (before project_in) for `ids` into `out` [ids.count, embed_dim].
    func embed(_ ids: [Int], into out: UnsafeMutablePointer<Float>) {
        for (i, id) in ids.enumerated() { embedTokens.dequantizeRow(id, into: out + i * embedTokens.cols) }
    }

    /// Runs `tokens` input embeddings [tokens, embed_dim] at positions cache.length..., appending to the
    /// cache; writes the logits of the last position. With `split`, rows [0, split) and [split, tokens) end
    /// exactly as two forwards of them would leave the cache and the logits (an image's rows and a prompt's:
    /// every product tiles each part as its own call would, see `blip2_gemm_split`), with the weights read
    /// once when they fit one chunk.
    func forward(_ embeddings: UnsafePointer<Float>, tokens: Int, split: Int? = nil, cache: KVCache,
                 logits: UnsafeMutablePointer<Float>, compute: ComputeContext) {
        precondition(tokens > 0 && cache.length + tokens <= cache.capacity, "KV cache overflow is checked by the caller")
        lock.lock()
        defer { lock.unlock() }
        let last: Int
        if let split, split > 0, split < tokens {
            if tokens <= Self.chunkTokens {
                last = runChunks(embeddings, tokens: tokens, split: split, cache: cache, compute: compute)
            } else {
                // More rows than one chunk: the parts one after the other, which is what they must equal.
                runChunks(embeddings, tokens: split, split: nil, cache: cache, compute: compute)
                last = runChunks(embeddings + split * config.embeddingDim, tokens: tokens - split, split: nil, cache: cache, compute: compute)
            }
        } else {
            last = runChunks(embeddings, tokens: tokens, split: nil, cache: cache, compute: compute)
        }
        head(state.x.pointer + last * hidden, tokens: 1, into: logits, compute: compute)
    }

    /// `tokens` rows in chunks of `chunkTokens` (`split` only when they fit one); returns the row of
    /// `state.x` that holds the last one.
    @discardableResult
    private func runChunks(_ embeddings: UnsafePointer<Float>, tokens: Int, split: Int?, cache: KVCache, compute: ComputeContext) -> Int {
        var done = 0, last = 0
        while done < tokens {
            let count = min(Self.chunkTokens, tokens - done)
            let input = embeddings + done * config.embeddingDim
            if let projectIn {
                compute.linear(input, tokens: count, projectIn, into: state.x.pointer, split: split)
            } else {
                state.x.pointer.update(from: input, count: count * hidden)
            }
            runLayers(tokens: count, .sequence(cache), split: split, compute: compute)
            done += count
            last = count - 1
        }
        return last
    }

    /// Most rows one step takes (the activations are sized for a prompt chunk): a row per decoding sequence,
    /// and a prompt's tokens.
    static var maxStepRows: Int { chunkTokens }

    /// One step for several sequences: sequence b takes `counts[b]` consecutive rows of `tokens` (nil: one
    /// each, a decode step) at the next positions of `sessions[b]`'s own cache, so a prompt can ride on the
    /// step of sequences that are decoding. `logits(b, row)` receives the logits of sequence b's last row
    /// (valid during the call). Every product takes all the rows as one many-token product (each weight
    /// read from memory once, its unpacking shared by the tile's tokens), and attention runs per sequence
    /// over its own cache. Each sequence ends as a `forward` of its rows alone would leave it, within float
    /// rounding: the tiles may group its rows with others' (on AVX-512 VNNI the panel tiles give every
    /// row the same bits whatever its neighbours).
    func step(tokens: [Int], counts: [Int]? = nil, sessions: [LanguageSession], compute: ComputeContext,
              logits: (Int, UnsafePointer<Float>) -> Void) {
        let rows = tokens.count, batch = sessions.count
        precondition(rows > 0 && rows <= Self.maxStepRows && (counts?.count ?? rows) == batch
                     && (counts?.reduce(0, +) ?? rows) == rows, "step shape is checked by the caller")
        for (b, session) in sessions.enumerated() {
            precondition(session.length + (counts?[b] ?? 1) <= session.capacity, "KV cache overflow is checked by the caller")
        }
        lock.lock()
        defer { lock.unlock() }
        if let projectIn {
            // embed_dim-wide rows before project_in: the FFN buffer is wider than both.
            embed(tokens, into: state.ffn.pointer)
            compute.linear(state.ffn.pointer, tokens: rows, projectIn, into: state.x.pointer)
        } else {
            embed(tokens, into: state.x.pointer)
        }
        runLayers(tokens: rows, .batch(sessions, counts: counts), split: nil, compute: compute)
        // Only each sequence's last row needs logits: those rows move to the front, in order.
        if let counts {
            var last = -1
            for b in 0..<batch {
                last += counts[b]
                if last != b { memmove(state.x.pointer + b * hidden, state.x.pointer + last * hidden, hidden * MemoryLayout<Float>.stride) }
            }
        }
        let vocab = vocabSize
        if batchLogits.count < batch * vocab { batchLogits = FloatBuffer(batch * vocab) }
        head(state.x.pointer, tokens: batch, into: batchLogits.pointer, compute: compute)
        for b in 0..<batch { logits(b, batchLogits.pointer + b * vocab) }
    }

    /// final_layer_norm, project_out and lm_head for `tokens` rows of hidden states (changed in place).
    private func head(_ x: UnsafeMutablePointer<Float>, tokens: Int, into logits: UnsafeMutablePointer<Float>,
                      compute: ComputeContext) {
        if let finalLayerNorm { compute.layerNorm(x, tokens: tokens, finalLayerNorm) }
        if let projectOut {
            compute.linear(x, tokens: tokens, projectOut, into: state.headInput.pointer)
            compute.linear(state.headInput.pointer, tokens: tokens, lmHead, into: logits)
        } else {
            compute.linear(x, tokens: tokens, lmHead, into: logits)
        }
    }

    /// The earlier sequence of a step that holds most of sequence b's leading positions alike (the same
    /// stamps), when that is worth reading from there: the attention reads those keys and values from the
    /// leader's cache, which the leader's own parts of the same pass brought into cache shortly before.
    /// Beams and samples of one prompt share the prompt and what they decoded before they parted; requests
    /// on one picture share it.
    static func sharedPrefix(of b: Int, in sessions: [LanguageSession]) -> SharedPrefix {
        var best = SharedPrefix(leader: b, positions: 0)
        for a in 0..<b {
            let positions = sessions[b].cache.sharedPrefix(with: sessions[a].cache)
            if positions > best.positions { best = SharedPrefix(leader: a, positions: positions) }
        }
        return best.positions >= minimumSharedPositions ? best : SharedPrefix(leader: b, positions: 0)
    }
    /// Below this, the two products per head that a shared prefix takes cost more than the reads they save.
    static let minimumSharedPositions = 8

    /// Where the rows of one pass sit.
    private enum Placement {
        /// One sequence's consecutive positions from `cache.length` on (a prompt, or one token).
        case sequence(KVCache)
        /// Session b's `counts[b]` rows (nil: one) follow session b - 1's, each at the next positions of its
        /// own cache (a step of several sequences).
        case batch([LanguageSession], counts: [Int]?)
    }

    /// Rows already in `state.x` (embedded, before positions) through every layer; leaves their hidden
    /// states in `state.x` and the caches one row (batch) or `tokens` rows (sequence) longer. `split`: the
    /// products tile rows [0, split) and the rest as two calls would.
    private func runLayers(tokens: Int, _ placement: Placement, split: Int?, compute: ComputeContext) {
        let h = hidden
        let x = state.x.pointer, normed = state.normed.pointer, qkv = state.qkv.pointer
        let context = state.context.pointer, ffn = state.ffn.pointer
        switch placement {
        case .sequence(let cache):
            for t in 0..<tokens {
                Ops.add(x + t * h, embedPositions + (cache.length + t + OPTConfig.positionOffset) * h, count: h)
            }
        case .batch(let sessions, let counts):
            var row = 0
            for (b, session) in sessions.enumerated() {
                for t in 0..<(counts?[b] ?? 1) {
                    Ops.add(x + row * h, embedPositions + (session.length + t + OPTConfig.positionOffset) * h, count: h)
                    row += 1
                }
            }
        }
        let heads = config.numAttentionHeads, headDim = h / heads
        let scaling = 1 / Float(headDim).squareRoot()
        if case .batch(let sessions, _) = placement {
            for b in sessions.indices { state.prefixes[b] = sharesPrefixes ? Self.sharedPrefix(of: b, in: sessions) : SharedPrefix(leader: b, positions: 0) }
        }
        for (i, layer) in layers.enumerated() {
            compute.layerNorm(x, into: normed, tokens: tokens, layer.selfAttentionNorm)
            // qkv rows: [q (scaled below) | k | v], 3h wide.
            compute.linear(normed, tokens: tokens, concatenated: layer.qkv, into: qkv, split: split)
            for t in 0..<tokens {
                let row = qkv + t * 3 * h
                for j in 0..<h { row[j] *= scaling }
            }
            // q is scaled before the product (as OPT does), so the scores take no further scale.
            switch placement {
            case .sequence(let cache):
                let start = cache.length, keys = cache.keys(layer: i), values = cache.values(layer: i)
                cache.store(qkv + h, rowStride: 3 * h, tokens: tokens, at: start, into: keys)
                cache.store(qkv + 2 * h, rowStride: 3 * h, tokens: tokens, at: start, into: values)
                compute.attention(q: qkv, k: keys, v: values, out: context,
                                  AttentionShape(heads: heads, headDim: headDim, queries: tokens, keys: start + tokens,
                                                 qStride: 3 * h, kvStride: headDim, kvHeadStride: cache.headStride,
                                                 scale: 1, causalOffset: start))
            case .batch(let sessions, let counts):
                // Every sequence's attention over its own cache, in one pass of the pool.
                var first = 0
                for (b, session) in sessions.enumerated() {
                    let count = counts?[b] ?? 1, rows = qkv + first * 3 * h
                    let cache = session.cache, start = cache.length, keys = cache.keys(layer: i), values = cache.values(layer: i)
                    cache.store(rows + h, rowStride: 3 * h, tokens: count, at: start, into: keys)
                    cache.store(rows + 2 * h, rowStride: 3 * h, tokens: count, at: start, into: values)
                    let shared = state.prefixes[b], leader = sessions[shared.leader].cache
                    state.attention[b] = AttentionInput(
                        q: rows, k: keys, v: values, out: context + first * h,
                        shape: AttentionShape(heads: heads, headDim: headDim, queries: count, keys: start + count,
                                              qStride: 3 * h, kvStride: headDim, kvHeadStride: cache.headStride,
                                              scale: 1, causalOffset: start),
                        prefix: shared.positions == 0 ? .none
                            : AttentionPrefix(k: leader.keys(layer: i), v: leader.values(layer: i), kvHeadStride: leader.headStride,
                                              keys: shared.positions))
                    first += count
                }
                compute.attention(UnsafeBufferPointer(rebasing: state.attention[..<sessions.count]))
            }
            compute.linear(context, tokens: tokens, layer.outProj, into: normed, split: split)
            Ops.add(x, normed, count: tokens * h)

            compute.layerNorm(x, into: normed, tokens: tokens, layer.finalNorm)
            compute.linear(normed, tokens: tokens, layer.fc1, into: ffn, split: split)
            Ops.relu(ffn, count: tokens * config.ffnDim)
            compute.linear(ffn, tokens: tokens, layer.fc2, into: normed, split: split)
            Ops.add(x, normed, count: tokens * h)
        }
        switch placement {
        case .sequence(let cache): cache.advance(by: tokens)
        case .batch(let sessions, let counts):
            for (b, session) in sessions.enumerated() { session.cache.advance(by: counts?[b] ?? 1) }
        }
    }
}

/// Keys and values of every layer for the positions consumed so far.
///
/// Head-major: a layer's keys are `heads` blocks of [capacity, headDim] (`headStride` apart), and so are its
/// values, so the attention of one head while decoding reads one contiguous run of memory. (Rows of all
/// heads side by side had each head read 320 bytes out of every 10 KB at full size.)
public final class KVCache {
    public let layers: Int
    public let heads: Int
    public let headDim: Int
    public let capacity: Int
    public private(set) var length = 0
    private let storage: UnsafeMutablePointer<Float>
    /// One stamp per position, unique to the pass that computed it and carried along by copies: two caches
    /// whose positions 0..<p bear the same stamps hold the same keys and values there, so a copy between
    /// them moves only what differs (beams share the prompt and the tokens before they parted; a prompt
    /// copied from an image's prefix shares the image).
    private let stamps: UnsafeMutablePointer<UInt64>

    struct Shape {
        var layers: Int
        var heads: Int
        var headDim: Int
        var capacity: Int
        /// Positions the storage is laid out for: the capacity rounded up to a multiple of 32, so caches of
        /// nearby capacities (prompts of different lengths) reuse each other's memory (`KVStoragePool`).
        var storedPositions: Int { (capacity + 31) / 32 * 32 }
        /// Keys and values of every layer and head.
        var floats: Int { 2 * layers * heads * storedPositions * headDim }
        var bytes: Int { floats * MemoryLayout<Float>.stride }
    }
    private let storedPositions: Int
    private let storageFloats: Int

    init(shape: Shape) {
        layers = shape.layers
        heads = shape.heads
        headDim = shape.headDim
        capacity = shape.capacity
        storedPositions = shape.storedPositions
        storageFloats = max(1, shape.floats)
        storage = KVStoragePool.shared.take(floats: storageFloats)
        stamps = .allocate(capacity: max(1, shape.capacity))
        stamps.initialize(repeating: 0, count: max(1, shape.capacity))
    }
    deinit {
        KVStoragePool.shared.give(storage, floats: storageFloats)
        stamps.deallocate()
    }

    /// Floats per position over all heads.
    public var width: Int { heads * headDim }
    /// Floats between the blocks of consecutive heads.
    var headStride: Int { storedPositions * headDim }

    func keys(layer: Int) -> UnsafeMutablePointer<Float> { storage + (2 * layer) * storedPositions * width }
    func values(layer: Int) -> UnsafeMutablePointer<Float> { storage + (2 * layer + 1) * storedPositions * width }

    /// Stores `tokens` rows of [heads * headDim] (`rowStride` apart) at positions `start...` of `block`
    /// (a layer's keys or values).
    func store(_ rows: UnsafePointer<Float>, rowStride: Int, tokens: Int, at start: Int, into block: UnsafeMutablePointer<Float>) {
        for h in 0..<heads {
            let head = block + h * headStride + start * headDim
            for t in 0..<tokens { (head + t * headDim).update(from: rows + t * rowStride + h * headDim, count: headDim) }
        }
    }

    /// Counts in the `tokens` positions after `length`, whose keys and values every layer has stored: each
    /// takes a new stamp.
    func advance(by tokens: Int) {
        precondition(tokens >= 0 && length + tokens <= capacity)
        let last = KVCache.stampCounter.add(UInt64(tokens), ordering: .relaxed).newValue
        for i in 0..<tokens { stamps[length + i] = last - UInt64(tokens - 1 - i) }
        length += tokens
    }

    /// Stamps are drawn from one process-wide counter (a run of them per pass), so no two positions, in any
    /// cache, share one; 0 is never drawn (a new cache's positions hold nothing).
    private static let stampCounter = Atomic<UInt64>(0)

    /// A copy holding the same positions.
    func copy() -> KVCache {
        let other = KVCache(shape: Shape(layers: layers, heads: heads, headDim: headDim, capacity: capacity))
        other.copy(from: self)
        return other
    }

    /// How many leading positions this cache and `other` hold alike (the same stamps).
    func sharedPrefix(with other: KVCache) -> Int {
        var p = 0
        let end = min(length, other.length)
        while p < end && stamps[p] == other.stamps[p] { p += 1 }
        return p
    }

    /// Takes `other`'s positions (a cache of the same layers and heads, holding at most this one's
    /// capacity), reusing this one's memory; the positions both already hold alike are not copied.
    func copy(from other: KVCache) {
        copy(from: other, positions: other.length)
    }

    /// Takes `other`'s first `positions` positions.
    func copy(from other: KVCache, positions: Int) {
        precondition(other.layers == layers && other.heads == heads && other.headDim == headDim
                     && positions <= other.length && positions <= capacity)
        guard other !== self else { return truncate(to: positions) }
        let shared = min(sharedPrefix(with: other), positions), count = positions - shared
        if count > 0 {
            for block in 0..<(2 * layers * heads) {
                (storage + block * headStride + shared * headDim)
                    .update(from: other.storage + block * other.headStride + shared * headDim, count: count * headDim)
            }
            (stamps + shared).update(from: other.stamps + shared, count: count)
        }
        length = positions
    }

    /// Forgets positions from `newLength` on (chat turns reuse the shared prefix).
    func truncate(to newLength: Int) {
        precondition(newLength <= length)
        length = newLength
    }
}

/// The memory of caches that were freed, kept for the next cache of the same size. A fresh allocation of
/// tens of megabytes (a full-size session: 0.66 MB per position) is handed out by the kernel a page at a
/// time on first touch, which cost about 5% of a full-size prefill and of the first step of a beam search;
/// every generation after the first takes its caches from here instead. A few buffers, and at most
/// `limitBytes` in all; kept buffers are marked free for the kernel to take back under memory pressure
/// (MADV_FREE: a page it took comes back zeroed on the next touch, and a cache never reads a position it
/// has not written), so an idle server does not pin them.
// @unchecked Sendable: its list is behind its lock.
final class KVStoragePool: @unchecked Sendable {
    static let shared = KVStoragePool(buffers: 8, limitBytes: 256 << 20)
    static let alignment = 4096

    private let lock = NSLock()
    private var free: [(floats: Int, pointer: UnsafeMutableRawPointer)] = []
    private var heldBytes = 0
    private let buffers: Int
    private let limitBytes: Int

    init(buffers: Int, limitBytes: Int) {
        self.buffers = buffers
        self.limitBytes = limitBytes
    }

    /// Memory for `floats` floats, page-aligned, its contents undefined.
    func take(floats: Int) -> UnsafeMutablePointer<Float> {
        let kept: UnsafeMutableRawPointer? = lock.withLock {
            guard let i = free.lastIndex(where: { $0.floats == floats }) else { return nil }
            heldBytes -= floats * MemoryLayout<Float>.stride
            return free.remove(at: i).pointer
        }
        let raw = kept ?? .allocate(byteCount: floats * MemoryLayout<Float>.stride, alignment: Self.alignment)
        return raw.bindMemory(to: Float.self, capacity: floats)
    }

    /// Takes back memory from `take(floats:)`; frees the oldest kept buffers beyond the limits.
    func give(_ pointer: UnsafeMutablePointer<Float>, floats: Int) {
        let raw = UnsafeMutableRawPointer(pointer), bytes = floats * MemoryLayout<Float>.stride
        guard bytes <= limitBytes else { return raw.deallocate() }
        _ = madvise(raw, bytes / Self.alignment * Self.alignment, MADV_FREE)
        let dropped: [UnsafeMutableRawPointer] = lock.withLock {
            free.append((floats, raw))
            heldBytes += bytes
            var dropped: [UnsafeMutableRawPointer] = []
            while free.count > buffers || heldBytes > limitBytes {
                let oldest = free.removeFirst()
                heldBytes -= oldest.floats * MemoryLayout<Float>.stride
                dropped.append(oldest.pointer)
            }
            return dropped
        }
        for pointer in dropped { pointer.deallocate() }
    }

    /// Bytes kept for reuse.
    var keptBytes: Int { lock.withLock { heldBytes } }
}
