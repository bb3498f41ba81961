import Blip2Compute
import Blip2Config
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
    public let runs: Int
    public let newTokens: Int
    public let promptTokens: Int
    public let loadMs: Double
    public let peakRSSBytes: Int
    public let stagesMs: Stages
    public let tokensPerSecond: Double
    public let readBandwidthBytesPerSecond: Double
    /// Floor (decode bytes per token / read bandwidth) over the median measured ms per token: 1 is the limit.
    public let bandwidthFraction: Double

    enum CodingKeys: String, CodingKey {
        case version, machine, threads, kernel, model, runs, newTokens = "new_tokens", promptTokens = "prompt_tokens"
        case loadMs = "load_ms", peakRSSBytes = "peak_rss_bytes", stagesMs = "stages_ms", tokensPerSecond = "tokens_per_second"
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
        let pipeline = try Blip2Pipeline(modelPath: modelPath, compute: compute)
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
            var t = DispatchTime.now().uptimeNanoseconds
            let pixels = pipeline.preprocessor.pixelValues(for: image)
            let preprocessMs = milliseconds(since: t)
            t = DispatchTime.now().uptimeNanoseconds
            let states = pipeline.model.visionForward(pixels: pixels)
            let visionMs = milliseconds(since: t)
            t = DispatchTime.now().uptimeNanoseconds
            let embeddings = pipeline.model.project(queryStates: pipeline.model.qformerForward(imageStates: states))
            let qformerMs = milliseconds(since: t)

            t = DispatchTime.now().uptimeNanoseconds
            let (state, context) = try pipeline.startState(imageEmbeddings: embeddings, promptIds: promptIds, newTokens: settings.newTokens)
            let prefillMs = milliseconds(since: t)

            // Forced length: EOS is suppressed until the last token, so every run decodes the same steps.
            var options = GenerationOptions()
            options.maxNewTokens = settings.newTokens
            options.minNewTokens = settings.newTokens
            options.eosTokenId = pipeline.eosTokenId
            options.padTokenId = pipeline.padTokenId
            var stamps: [UInt64] = []
            stamps.reserveCapacity(settings.newTokens)
            let generateStart = DispatchTime.now().uptimeNanoseconds
            _ = try Generator.generate(from: state, contextIds: context, options: options) { _ in
                stamps.append(DispatchTime.now().uptimeNanoseconds)
            }
            let total = milliseconds(since: started)
            guard run > 0 else { continue }
            decodeMs.map { decode.append($0) }
            preprocess.append(preprocessMs)
            vision.append(visionMs)
            qformer.append(qformerMs)
            prefill.append(prefillMs)
            let firstMs = stamps.first.map { Double($0 - generateStart) / 1e6 } ?? 0
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
            runs: settings.runs, newTokens: settings.newTokens, promptTokens: promptIds.count, loadMs: loadMs,
            peakRSSBytes: peakResident,
            stagesMs: .init(imageDecode: decode.isEmpty ? nil : Spread(decode), preprocess: Spread(preprocess), vision: Spread(vision),
                            qformerProjection: Spread(qformer), prefill: Spread(prefill), timeToFirstToken: Spread(firstToken),
                            msPerToken: msPerToken, caption: Spread(caption)),
            tokensPerSecond: msPerToken.median > 0 ? 1000 / msPerToken.median : 0,
            readBandwidthBytesPerSecond: bandwidth,
            bandwidthFraction: msPerToken.median > 0 ? floorMs / msPerToken.median : 0)
    }

    static func milliseconds(since start: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6 }

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
