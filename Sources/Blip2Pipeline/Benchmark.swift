import Blip2Compute
import Blip2Configs
import Blip2Core
import Blip2Generation
import Blip2Image
import Blip2ModelFile
import Dispatch
import Foundation

// MARK: - blip2 bench
//
// One model, one image, the same forced number of new tokens every run: load time, per-stage latency,
// decode speed against this machine's read-bandwidth floor measured in the same process.

public struct BenchmarkSettings: Sendable {
    public var image: URL?
    public var runs = 3
    public var newTokens = 20
    public var bandwidthBytes = 1 << 30
    /// Beam search over this many beams (1: greedy search).
    public var beams = 1
    /// Independent sampled sequences decoded together, one step for all (1: greedy search).
    public var batch = 1
    public init() {}
}

/// min / median / max in milliseconds.
public struct Spread: Codable, Sendable {
    public let min: Double
    public let median: Double
    public let max: Double
    init(_ values: [Double]) {
        let sorted = values.sorted()
        min = sorted.first ?? 0
        max = sorted.last ?? 0
        median = sorted.isEmpty ? 0 : sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }
}

/// What `blip2 bench --json` prints (documented in docs/BENCH.md; field names are a contract).
public struct BenchmarkReport: Codable, Sendable {
    public struct Model: Codable, Sendable {
        public let path: String
        public let fileBytes: Int
        public let componentBytes: [String: Int]
        public let weights: String?
        public let compression: String?
        /// Language-model weight bytes one decode step reads (all OPT layers and the output head).
        public let decodeBytesPerToken: Int
        enum CodingKeys: String, CodingKey {
            case path, fileBytes = "file_bytes", componentBytes = "component_bytes", weights, compression
            case decodeBytesPerToken = "decode_bytes_per_token"
        }
    }
    public struct Stages: Codable, Sendable {
        public let imageDecode: Spread?
        public let preprocess: Spread
        public let vision: Spread
        public let qformerProjection: Spread
        public let prefill: Spread
        public let timeToFirstToken: Spread
        public let msPerToken: Spread
        public let caption: Spread
        enum CodingKeys: String, CodingKey {
            case imageDecode = "image_decode", preprocess, vision, qformerProjection = "qformer_projection", prefill
            case timeToFirstToken = "time_to_first_token", msPerToken = "ms_per_token", caption
        }
    }
    public let version: String
    public let machine: MachineInfo
    public let threads: Int
    public let kernel: String
    public let model: Model
    /// Where the many-token stages spend their time: products or the rest (medians over the runs).
    public struct StageProfile: Codable, Sendable {
        /// In the products, activation quantization included.
        public let productsMs: Double
        /// Quantizing the products' activations (part of `productsMs`).
        public let quantizeMs: Double
        /// Everything else: attention, norms, GELU, residual adds, copies.
        public let otherMs: Double
        /// Parts of `otherMs`: attention (its products over keys and values included), layer norms, GELU.
        public let attentionMs: Double
        public let normsMs: Double
        public let geluMs: Double
        /// Of `attentionMs`: the image encoder's and Q-Former's attention products (scores and values, f32
        /// many-token tiles); 0 for the causal stages, whose attention is not split.
        public let attentionProductsMs: Double
        /// The stage's multiply-adds (2 x rows x cols x tokens over its products) per second of the stage, in G.
        public let gigaOperationsPerSecond: Double
        enum CodingKeys: String, CodingKey {
            case productsMs = "products_ms", quantizeMs = "quantize_ms", otherMs = "other_ms"
            case attentionMs = "attention_ms", normsMs = "norms_ms", geluMs = "gelu_ms"
            case attentionProductsMs = "attention_products_ms"
            case gigaOperationsPerSecond = "gops"
        }
    }
    public struct Profile: Codable, Sendable {
        public let vision: StageProfile
        public let qformerProjection: StageProfile
        public let prefill: StageProfile
        /// Every decode step of a run together (the output head is one of its products).
        public let decode: StageProfile
        enum CodingKeys: String, CodingKey { case vision, qformerProjection = "qformer_projection", prefill, decode }
    }
    public let runs: Int
    public let newTokens: Int
    /// Beams of the beam search (1: greedy).
    public let beams: Int
    /// Sampled sequences stepped together (1: one sequence).
    public let batch: Int
    public let promptTokens: Int
    public let loadMs: Double
    public let peakRSSBytes: Int
    public let stagesMs: Stages
    public let profile: Profile
    /// Tokens generated per second over all sequences of a batch (a beam search yields one sequence).
    public let tokensPerSecond: Double
    public let readBandwidthBytesPerSecond: Double
    /// Floor (decode bytes per token / read bandwidth) over the median measured ms per token: 1 is the limit.
    public let bandwidthFraction: Double

    enum CodingKeys: String, CodingKey {
        case version, machine, threads, kernel, model, runs, newTokens = "new_tokens", beams, batch, promptTokens = "prompt_tokens"
        case loadMs = "load_ms", peakRSSBytes = "peak_rss_bytes", stagesMs = "stages_ms", profile, tokensPerSecond = "tokens_per_second"
        case readBandwidthBytesPerSecond = "read_bandwidth_bytes_per_second", bandwidthFraction = "bandwidth_fraction"
    }
}

public enum Benchmark {
    /// Loads the model on `compute` (whose thread count and instruction set the report names) and measures it.
    public static func run(modelPath: String, settings: BenchmarkSettings, compute: ComputeContext,
                           progress: ((String) -> Void)? = nil) throws -> BenchmarkReport {
        progress?("loading")
        ProcessStats.resetPeakResident()
        let loadStart = DispatchTime.now().uptimeNanoseconds
        let pipeline = try Pipeline(modelPath: modelPath, compute: compute)
        let kernel = compute.isa.rawValue
        let loadMs = milliseconds(since: loadStart)
        let file = pipeline.model.file
        let provenance = try? file.decode(QuantizationProvenance.self, section: MetadataSectionName.quantization)
        var componentBytes: [String: Int] = [:]
        for record in file.tensors {
            componentBytes[provenance?.tensors[record.name]?.component ?? "other", default: 0] += record.storedSize
        }
        let decodeBytes = file.tensors.filter { record in
            record.name.hasPrefix("language_model.model.decoder.layers.") || record.name.hasPrefix("language_model.model.decoder.final_layer_norm")
                || record.name == WeightManifest.outputHeadKey
                || (record.name == WeightManifest.tokenEmbeddingKey && pipeline.model.config.textConfig.tieWordEmbeddings)
                // T5: a token runs the decoder stack and the head (shared when tied); the encoder runs once per prompt.
                || record.name.hasPrefix("language_model.decoder.")
                || (record.name == WeightManifest.t5SharedKey && pipeline.model.config.t5Config?.tieWordEmbeddings == true)
        }.reduce(0) { $0 + $1.size }

        // The image: a file, or a deterministic synthetic photo-sized frame.
        let rawImage: RGBImage? = settings.image == nil ? syntheticImage(width: 640, height: 480) : nil
        var decode: [Double] = [], preprocess: [Double] = [], vision: [Double] = [], qformer: [Double] = []
        var prefill: [Double] = [], firstToken: [Double] = [], perToken: [Double] = [], caption: [Double] = []
        let promptIds = pipeline.promptIds(nil)
        let productClock = ProductClock()
        compute.productClock = productClock
        defer { compute.productClock = nil }
        var profiles: [String: [StageRun]] = [:]
        /// Runs a stage with the product clock, recording its profile after the warm-up.
        func profiled<T>(_ stage: String, record: Bool, _ body: () throws -> T) rethrows -> (T, Double) {
            productClock.reset()
            let t = DispatchTime.now().uptimeNanoseconds
            let value = try body()
            let ms = milliseconds(since: t)
            if record {
                let products = Double(productClock.productNanoseconds) / 1e6
                profiles[stage, default: []].append(StageRun(
                    products: products, quantize: Double(productClock.quantizeNanoseconds) / 1e6, other: max(0, ms - products),
                    attention: Double(productClock.nanoseconds(.attention)) / 1e6, norms: Double(productClock.nanoseconds(.norms)) / 1e6,
                    gelu: Double(productClock.nanoseconds(.gelu)) / 1e6,
                    attentionProducts: Double(productClock.nanoseconds(.attentionProducts)) / 1e6, gops: ms > 0 ? productClock.operations / (ms / 1000) / 1e9 : 0))
            }
            return (value, ms)
        }
        for run in 0...settings.runs {   // run 0 warms caches and pages in the weights
            progress?(run == 0 ? "warm-up" : "run \(run)/\(settings.runs)")
            let started = DispatchTime.now().uptimeNanoseconds
            var image: RGBImage
            var decodeMs: Double?
            if let url = settings.image {
                let t = DispatchTime.now().uptimeNanoseconds
                image = try ImageDecoder.decode(contentsOf: url, options: pipeline.imageOptions)
                decodeMs = milliseconds(since: t)
            } else {
                image = rawImage!
            }
            let t = DispatchTime.now().uptimeNanoseconds
            let pixels = pipeline.preprocessor.pixelValues(for: image)
            let preprocessMs = milliseconds(since: t)
            let (states, visionMs) = profiled("vision", record: run > 0) { pipeline.model.visionForward(pixels: pixels) }
            let (embeddings, qformerMs) = profiled("qformer_projection", record: run > 0) {
                pipeline.model.project(queryStates: pipeline.model.qformerForward(imageStates: states))
            }
            // A fresh image each run, so the prefill is measured rather than copied from a kept prefix.
            let ((state, context), prefillMs) = try profiled("prefill", record: run > 0) {
                try pipeline.startState(image: EncodedImage(embeddings: embeddings, timings: StageTimings()),
                                        promptIds: promptIds, newTokens: settings.newTokens)
            }

            let clock = StepClock(capacity: settings.newTokens)
            let generateStart = DispatchTime.now().uptimeNanoseconds
            var firstChosen: UInt64?
            _ = try profiled("decode", record: run > 0) {
                try pipeline.decodingSteps {
                    try timedGenerate(state, clock: clock, contextIds: context, options: options(settings, pipeline)) { _ in
                        if firstChosen == nil { firstChosen = DispatchTime.now().uptimeNanoseconds }
                    }
                }
            }
            let stamps = clock.stamps
            let total = milliseconds(since: started)
            guard run > 0 else { continue }
            decodeMs.map { decode.append($0) }
            preprocess.append(preprocessMs)
            vision.append(visionMs)
            qformer.append(qformerMs)
            prefill.append(prefillMs)
            // Beam search names its tokens only at the end: its first step is over when the second begins.
            let firstMs = (settings.beams > 1 ? stamps.first : firstChosen).map { Double($0 - generateStart) / 1e6 } ?? 0
            firstToken.append((decodeMs ?? 0) + preprocessMs + visionMs + qformerMs + prefillMs + firstMs)
            if stamps.count > 1 { perToken.append(Double(stamps.last! - stamps.first!) / 1e6 / Double(stamps.count - 1)) }
            caption.append(total)
        }
        // Before the bandwidth buffer inflates it.
        let peakResident = ProcessStats.peakResidentBytes
        progress?("measuring read bandwidth")
        let bandwidth = ReadBandwidth.measure(bytes: settings.bandwidthBytes, threads: compute.threads)
        let msPerToken = Spread(perToken)
        let floorMs = Double(decodeBytes) / bandwidth * 1000
        return BenchmarkReport(
            version: Blip2Version.string, machine: MachineInfo.current(), threads: compute.threads, kernel: kernel,
            model: .init(path: modelPath, fileBytes: file.fileSize, componentBytes: componentBytes, weights: provenance?.weights,
                         compression: provenance?.compression, decodeBytesPerToken: decodeBytes),
            runs: settings.runs, newTokens: settings.newTokens, beams: settings.beams, batch: settings.batch,
            promptTokens: promptIds.count, loadMs: loadMs,
            peakRSSBytes: peakResident,
            stagesMs: .init(imageDecode: decode.isEmpty ? nil : Spread(decode), preprocess: Spread(preprocess), vision: Spread(vision),
                            qformerProjection: Spread(qformer), prefill: Spread(prefill), timeToFirstToken: Spread(firstToken),
                            msPerToken: msPerToken, caption: Spread(caption)),
            profile: .init(vision: stageProfile(profiles["vision"]), qformerProjection: stageProfile(profiles["qformer_projection"]),
                           prefill: stageProfile(profiles["prefill"]), decode: stageProfile(profiles["decode"])),
            tokensPerSecond: msPerToken.median > 0 ? Double(settings.batch) * 1000 / msPerToken.median : 0,
            readBandwidthBytesPerSecond: bandwidth,
            bandwidthFraction: msPerToken.median > 0 ? floorMs / msPerToken.median : 0)
    }

    /// Forced length: EOS is suppressed until the last token, so every run decodes the same steps. Greedy
    /// search, beam search over `beams`, or `batch` sampled sequences (a fixed seed) stepping together.
    static func options(_ settings: BenchmarkSettings, _ pipeline: Pipeline) -> GenerationOptions {
        var options = GenerationOptions()
        options.maxNewTokens = settings.newTokens
        options.minNewTokens = settings.newTokens
        options.eosTokenId = pipeline.eosTokenId
        options.padTokenId = pipeline.padTokenId
        if settings.beams > 1 {
            options.numBeams = settings.beams
        } else if settings.batch > 1 {
            options.doSample = true
            options.numReturnSequences = settings.batch
        }
        return options
    }

    /// One run of a many-token stage, in milliseconds.
    struct StageRun {
        var products, quantize, other, attention, norms, gelu, attentionProducts, gops: Double
    }

    static func stageProfile(_ runs: [StageRun]?) -> BenchmarkReport.StageProfile {
        let runs = runs ?? []
        func median(_ value: (StageRun) -> Double) -> Double { Spread(runs.map(value)).median }
        return .init(productsMs: median(\.products), quantizeMs: median(\.quantize), otherMs: median(\.other),
                     attentionMs: median(\.attention), normsMs: median(\.norms), geluMs: median(\.gelu),
                     attentionProductsMs: median(\.attentionProducts),
                     gigaOperationsPerSecond: median(\.gops))
    }

    static func milliseconds(since start: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6 }

    /// When each decode step of the model began (one step feeds every beam or sequence its token).
    final class StepClock {
        private(set) var stamps: [UInt64] = []
        init(capacity: Int) { stamps.reserveCapacity(capacity) }
        func tick() { stamps.append(DispatchTime.now().uptimeNanoseconds) }
    }

    /// A session whose steps are timed: the interval between two steps' starts is one model step plus the
    /// strategy's work on its logits, what a generated token costs.
    final class StepTimedState<Inner: DecoderState>: DecoderState {
        let inner: Inner
        let clock: StepClock
        init(_ inner: Inner, clock: StepClock) {
            self.inner = inner
            self.clock = clock
        }
        var logits: [Float] { inner.logits }
        func append(_ token: Int) throws {
            clock.tick()
            try inner.append(token)
        }
        func fork() throws -> StepTimedState { StepTimedState(try inner.fork(), clock: clock) }
        func fork(into spare: StepTimedState?) throws -> StepTimedState {
            StepTimedState(try inner.fork(into: spare?.inner), clock: clock)
        }
        static func append(_ tokens: [Int], to states: [StepTimedState]) throws {
            states.first?.clock.tick()
            try Inner.append(tokens, to: states.map(\.inner))
        }
    }

    /// Generates from `state` (OPT's or T5's) with its steps timed by `clock`.
    static func timedGenerate<State: DecoderState>(_ state: State, clock: StepClock, contextIds: [Int], options: GenerationOptions,
                                                   onToken: @escaping (Int) -> Void) throws -> [GeneratedSequence] {
        try Generator.generate(from: StepTimedState(state, clock: clock), contextIds: contextIds, options: options, onToken: onToken)
    }

    /// A smooth gradient with a few hard edges: resizing work like a photo's, same every run.
    static func syntheticImage(width: Int, height: Int) -> RGBImage {
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height {
            for x in 0..<width {
                let i = (y * width + x) * 3
                pixels[i] = UInt8((x * 255) / max(1, width - 1))
                pixels[i + 1] = UInt8((y * 255) / max(1, height - 1))
                pixels[i + 2] = ((x / 40) + (y / 40)) % 2 == 0 ? 200 : 30
            }
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }
}
