import Blip2Configs
import Blip2Core
import Blip2Image
import Blip2ModelFile
import Blip2Tokenizer
import Dispatch
import Foundation

// MARK: - blip2-quantize
//
// Checkpoint folder in, one model file out. Tensors stream through in row chunks: the source pages of a
// chunk are dropped once it is written, so peak memory is a few chunk buffers, not the checkpoint.

public struct ConversionOptions: Sendable {
    public var weights: WeightPrecision = .q8
    public var compression: TensorCompression = .none
    public var zstdLevel: Int32 = 3
    public var overrides: [PrecisionOverride] = []
    public var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    /// Weights every quantized matrix's fit by its columns' importance (`--imatrix`); `importanceFile` names
    /// it in messages and in the file's quantization record.
    public var importance: ImportanceMatrix?
    public var importanceFile: String = ""
    public init() {}
}

public struct ConversionReport: Codable, Sendable {
    public let output: String
    public let formatVersion: Int
    public let weights: String
    public let compression: String
    public let fileBytes: Int
    public let seconds: Double
    public let tensors: [TensorReport]
    /// Per component and `total`.
    public let totals: [String: TensorTotals]
    /// Per stored type and `total`.
    public let totalsByType: [String: TensorTotals]
    public let ignored: [String]

    enum CodingKeys: String, CodingKey {
        case output, formatVersion = "format_version", weights, compression, fileBytes = "file_bytes", seconds
        case tensors, totals, totalsByType = "totals_by_type", ignored
    }
}

public struct ConversionProgress: Sendable {
    public let tensorIndex: Int
    public let tensorCount: Int
    public let name: String
    public let bytesDone: Int
    public let bytesTotal: Int
}

public enum Converter {
    /// Rows per chunk are chosen so a chunk holds about this many f32 values.
    static let chunkElements = 1 << 21

    public static func convert(checkpoint folder: URL, output: String, options: ConversionOptions,
                               progress: ((ConversionProgress) -> Void)? = nil) throws -> ConversionReport {
        let started = Date()
        let checkpoint = try Checkpoint(folder: folder)
        let config = checkpoint.config
        let manifest = try WeightManifest(config: config)
        let policy = PrecisionPolicy(weights: options.weights, overrides: options.overrides)
        try policy.checkOverridesMatch(manifest.weights.map(\.name))

        let plan = try plan(checkpoint: checkpoint, manifest: manifest)
        let choices = try manifest.weights.map { try policy.choose(for: $0) }
        let importance = try importanceColumns(options, manifest: manifest)
        let sections = try metadataSections(checkpoint: checkpoint, config: config)

        let writer = try ModelFileWriter(destination: output)
        let buffers = ChunkBuffers(threads: max(1, options.threads))
        var converted: [TensorReport] = []
        var provenance: [String: TensorProvenance] = [:]
        let bytesTotal = plan.sources.reduce(0) { $0 + $1.elementCount }
        var bytesDone = 0

        for (i, spec) in manifest.weights.enumerated() {
            let source = plan.sources[i]
            let choice = choices[i]
            progress?(ConversionProgress(tensorIndex: i, tensorCount: manifest.weights.count, name: spec.name,
                                         bytesDone: bytesDone, bytesTotal: bytesTotal))
            let sink = try writer.beginTensor(name: spec.name, type: choice.type, shape: spec.shape,
                                              compression: options.compression, zstdLevel: options.zstdLevel)
            let error = try write(source, name: spec.name, as: choice.type, shape: spec.shape, importance: importance[spec.name],
                                  to: sink, buffers: buffers)
            let record = try sink.finish()
            bytesDone += source.elementCount

            converted.append(TensorReport(name: spec.name, type: choice.type.name, shape: spec.shape, bytes: record.size,
                                          storedBytes: record.storedSize, compression: record.compression.description,
                                          error: error, component: spec.component.rawValue, sourceDtype: source.dtypeName,
                                          note: choice.note))
            provenance[spec.name] = TensorProvenance(sourceDtype: source.dtypeName, error: error, component: spec.component.rawValue,
                                                     role: spec.role.rawValue, note: choice.note)
        }
        progress?(ConversionProgress(tensorIndex: manifest.weights.count, tensorCount: manifest.weights.count, name: "",
                                     bytesDone: bytesTotal, bytesTotal: bytesTotal))

        let record = QuantizationProvenance(
            tool: "blip2-quantize", toolVersion: Blip2Version.string,
            sourceDtypes: Array(Set(plan.sources.map(\.dtypeName))).sorted(), weights: options.weights.rawValue,
            compression: options.compression.description, zstdLevel: options.compression == .zstd ? Int(options.zstdLevel) : nil,
            overrides: options.overrides.map(\.description),
            imatrix: options.importance.map { _ in ImportanceProvenance(file: URL(fileURLWithPath: options.importanceFile).lastPathComponent,
                                                                        matrices: importance.count) },
            tensors: provenance)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try writer.finish(metadata: sections + [MetadataSection(name: MetadataSectionName.quantization, json: Array(try encoder.encode(record)))])

        let fileBytes = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
        return ConversionReport(output: output, formatVersion: Int(ModelFileFormat.version), weights: options.weights.rawValue,
                                compression: options.compression.description, fileBytes: fileBytes,
                                seconds: Date().timeIntervalSince(started), tensors: converted,
                                totals: TensorTotals.byComponent(converted), totalsByType: TensorTotals.byType(converted),
                                ignored: plan.ignored)
    }

    // MARK: Importance

    /// Per weight name, the importance of its input columns: the matrix's own entry, and for token embeddings
    /// that double as the output head, the head's entry (its inputs are what the head sees). Entries must name
    /// matrices of this model with their column counts.
    static func importanceColumns(_ options: ConversionOptions, manifest: WeightManifest) throws -> [String: [Float]] {
        guard let importance = options.importance else { return [:] }
        var matrices = manifest.weights.filter { $0.shape.count == 2 }.map { (name: $0.name, columns: $0.shape[1]) }
        let embedding = manifest.weights.first { $0.role == .tokenEmbedding }
        if let embedding, !matrices.contains(where: { $0.name == WeightManifest.outputHeadKey }) {
            matrices.append((name: WeightManifest.outputHeadKey, columns: embedding.shape[1]))
        }
        try importance.check(against: matrices, file: options.importanceFile)
        var columns: [String: [Float]] = [:]
        for spec in manifest.weights where spec.shape.count == 2 {
            var entry = importance.entries[spec.name]
            if entry == nil, spec.role == .tokenEmbedding { entry = importance.entries[WeightManifest.outputHeadKey] }
            if let entry, entry.tokens > 0 { columns[spec.name] = entry.values }
        }
        return columns
    }

    // MARK: Matching checkpoint keys to model weights

    struct Plan {
        var sources: [TensorSource]
        var ignored: [String]
    }

    /// Finds every model weight in the checkpoint and accounts for every checkpoint key: used, or
    /// ignored for a stated reason. Anything else is an error, so a renamed or missing weight is caught.
    static func plan(checkpoint: Checkpoint, manifest: WeightManifest) throws -> Plan {
        var unused = Set(checkpoint.tensors.keys)
        var sources: [TensorSource] = []
        var missing: [String] = []
        let config = checkpoint.config

        func stored(_ name: String) throws -> TensorSource? {
            guard let (shard, entry) = checkpoint.tensors[name] else { return nil }
            guard case .other(let dtype, _) = entry.dtype else {
                unused.remove(name)
                return .stored(checkpoint.shards[shard], entry)
            }
            throw ConversionError("\(checkpoint.shardPath(shard)): tensor '\(name)' is stored as \(dtype); weights must be F32, F16 or BF16")
        }

        for spec in manifest.weights {
            var source = try stored(spec.name)
            if source == nil, spec.name.hasSuffix(".self_attn.qkv.bias") {
                source = try legacyQKVBias(spec, stored: stored)
            }
            guard let source else {
                missing.append(spec.name)
                continue
            }
            if case .stored(let file, let entry) = source, entry.shape != spec.shape {
                // query_tokens and the vision embeddings are the only tensors stored with leading 1s.
                throw ConversionError("\(file.path): tensor '\(spec.name)' has shape \(entry.shape), but config.json implies \(spec.shape)")
            }
            sources.append(source)
        }
        if !missing.isEmpty {
            let shown = missing.prefix(5).joined(separator: ", ")
            throw ConversionError("\(checkpoint.folder.path): \(missing.count) model weight(s) missing from the checkpoint: \(shown)\(missing.count > 5 ? ", ..." : "") (does config.json match the weights?)")
        }

        var ignored: [String] = []
        for name in unused.sorted() {
            if let reason = ignoreReason(name, config: config) {
                ignored.append("\(name): \(reason)")
            } else {
                throw ConversionError("\(checkpoint.folder.path): unexpected tensor '\(name)' in the checkpoint: it is not part of a BLIP-2 model with this config.json")
            }
        }
        return Plan(sources: sources, ignored: ignored)
    }

    /// Older checkpoints keep the vision attention bias as q_bias and v_bias; the model adds
    /// [q_bias, 0, v_bias] after the fused qkv projection.
    static func legacyQKVBias(_ spec: WeightSpec, stored: (String) throws -> TensorSource?) throws -> TensorSource? {
        let prefix = String(spec.name.dropLast("qkv.bias".count))
        guard let q = try stored(prefix + "q_bias"), let v = try stored(prefix + "v_bias") else { return nil }
        let hidden = spec.shape[0] / 3
        guard q.elementCount == hidden, v.elementCount == hidden else {
            throw ConversionError("'\(prefix)q_bias' / 'v_bias' have \(q.elementCount) / \(v.elementCount) values, expected \(hidden)")
        }
        var values = [Float](repeating: 0, count: 3 * hidden)
        values.withUnsafeMutableBufferPointer { out in
            q.read(0..<hidden, into: out.baseAddress!)
            v.read(0..<hidden, into: out.baseAddress! + 2 * hidden)
        }
        return .fused(values: values, dtype: q.dtypeName)
    }

    static func ignoreReason(_ name: String, config: Blip2Config) -> String? {
        if name == WeightManifest.outputHeadKey, config.textConfig.tieWordEmbeddings {
            return "tied to embed_tokens (text_config.tie_word_embeddings)"
        }
        if name.hasSuffix("position_ids") { return "index buffer, recomputed at run time" }
        if config.t5Config != nil, let reason = t5IgnoreReason(name) { return reason }
        // The Q-Former's text feed-forward: the image path uses intermediate_query / output_query.
        let parts = name.split(separator: ".")
        if parts.count >= 6, parts[0] == "qformer", parts[1] == "encoder", parts[2] == "layer",
           parts[4] == "intermediate" || parts[4] == "output" {
            return "Q-Former text feed-forward, unused when only query tokens pass through"
        }
        return nil
    }

    // MARK: Metadata

    static func metadataSections(checkpoint: Checkpoint, config: Blip2Config) throws -> [MetadataSection] {
        let folder = checkpoint.folder
        func jsonObject(_ file: String, required: Bool) throws -> [UInt8]? {
            let url = folder.appendingPathComponent(file)
            guard FileManager.default.fileExists(atPath: url.path) else {
                if required { throw ConversionError("\(url.path): missing; the runtime needs it (\(file == "preprocessor_config.json" ? "image size, mean and std" : "settings"))") }
                return nil
            }
            let data = try Checkpoint.readJSON(url)
            guard (try? JSONSerialization.jsonObject(with: data)) is [String: Any] else {
                throw ConversionError("\(url.path): not a JSON object")
            }
            return Array(data)
        }
        var sections = [MetadataSection(name: MetadataSectionName.config, json: Array(checkpoint.configJSON))]
        let preprocessorJSON = try jsonObject("preprocessor_config.json", required: true)!
        // A file the runtime would refuse for every image is refused now, not after a long conversion.
        _ = try ImagePreprocessor.checked(json: Data(preprocessorJSON), name: folder.appendingPathComponent("preprocessor_config.json").path,
                                          side: config.visionConfig.imageSize)
        sections.append(MetadataSection(name: MetadataSectionName.preprocessorConfig, json: preprocessorJSON))
        sections.append(MetadataSection(name: MetadataSectionName.generationConfig, json: try jsonObject("generation_config.json", required: false) ?? Array("{}".utf8)))

        if config.t5Config != nil { return sections + [try t5TokenizerSection(folder: folder, config: config)] }
        let tokenizer: TokenizerData
        do {
            tokenizer = try TokenizerData.load(huggingFaceFolder: folder, imageTokenIndex: config.imageTokenIndex)
        } catch {
            throw ConversionError("\(folder.path): cannot read the tokenizer: \(error)")
        }
        let largest = max(tokenizer.vocab.values.max() ?? 0, tokenizer.addedTokens.map(\.id).max() ?? 0)
        guard largest < config.textConfig.vocabSize else {
            throw ConversionError("\(folder.path): the tokenizer has id \(largest), beyond the language model's \(config.textConfig.vocabSize) embedding rows")
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        sections.append(MetadataSection(name: MetadataSectionName.tokenizer, json: Array(try encoder.encode(tokenizer))))
        return sections
    }

    // MARK: Streaming one tensor

    /// Reused across tensors; owns its memory, so a conversion that fails half-way frees it too.
    final class ChunkBuffers {
        let threads: Int
        var input = UnsafeMutableBufferPointer<Float>.allocate(capacity: 0)
        var scratch = UnsafeMutableBufferPointer<Float>.allocate(capacity: 0)
        var output = UnsafeMutableRawBufferPointer.allocate(byteCount: 0, alignment: 64)

        init(threads: Int) { self.threads = threads }

        deinit {
            input.deallocate()
            scratch.deallocate()
            output.deallocate()
        }

        func reserve(elements: Int, outputBytes: Int) {
            if input.count < elements {
                input.deallocate(); scratch.deallocate()
                input = .allocate(capacity: elements)
                scratch = .allocate(capacity: elements)
            }
            if output.count < outputBytes {
                output.deallocate()
                output = .allocate(byteCount: outputBytes, alignment: 64)
            }
        }
    }

    /// The largest magnitude a source weight may have: the largest finite f16. Every stored type but f32
    /// is built on f16 (the values, or the block scales and minimums), f16 checkpoints cannot exceed it,
    /// and trained weights stay orders of magnitude below; anything beyond is a damaged checkpoint.
    public static let maxWeightMagnitude: Float = 65504

    static func isUsable(_ value: Float) -> Bool { value.isFinite && abs(value) <= maxWeightMagnitude }

    static func unusableValueError(_ name: String, _ source: TensorSource, _ found: (index: Int, value: Float)) -> ConversionError {
        var location = ""
        if case .stored(let file, _) = source { location = "\(file.path): " }
        return ConversionError("\(location)tensor '\(name)' holds \(found.value) at element \(found.index): weights must be finite and at most \(Int(maxWeightMagnitude)) in magnitude; the checkpoint is damaged")
    }

    /// Writes one tensor and returns its relative RMS error. Refuses NaN, infinite and absurd values.
    static func write(_ source: TensorSource, name: String, as type: ElementType, shape: [Int], importance: [Float]? = nil,
                      to sink: TensorSink, buffers: ChunkBuffers) throws -> Double {
        let count = source.elementCount
        if let raw = source.rawBytes(ifStoredAs: type) {
            let elementSize = type.blockBytes
            var start = 0
            while start < count {
                let end = min(count, start + chunkElements)
                if let found = source.firstUnusableValue(in: start..<end) { throw unusableValueError(name, source, found) }
                try sink.write(UnsafeRawBufferPointer(rebasing: raw[(start * elementSize)..<(end * elementSize)]))
                source.release(start..<end)
                start = end
            }
            return 0
        }
        let width = shape.count >= 2 ? shape[shape.count - 1] : max(count, 1)
        let rows = count == 0 ? 0 : count / width
        // Whole row groups (panels) per chunk and per thread, so every part writes complete groups.
        let group = type.blockRows
        let rowsPerChunk = max(group, chunkElements / max(width, 1) / group * group)
        let groupBytes = type.groupBytes(cols: width)!
        let chunkGroups = (min(rows, rowsPerChunk) + group - 1) / group
        buffers.reserve(elements: min(rows, rowsPerChunk) * width, outputBytes: chunkGroups * groupBytes)
        var error = 0.0, norm = 0.0
        var row = 0
        let threads = buffers.threads
        while row < rows {
            let chunkRows = min(rowsPerChunk, rows - row)
            let elements = (row * width)..<((row + chunkRows) * width)
            let input = buffers.input.baseAddress!, scratch = buffers.scratch.baseAddress!, output = buffers.output.baseAddress!
            let groups = (chunkRows + group - 1) / group
            let parts = min(threads, groups)
            var partial = [(Double, Double)](repeating: (0, 0), count: parts)
            var unusable = [(index: Int, value: Float)?](repeating: nil, count: parts)
            partial.withUnsafeMutableBufferPointer { partialSums in
                unusable.withUnsafeMutableBufferPointer { unusable in
                    // A part reads and encodes its own groups of rows into its own ranges of the buffers and
                    // writes its own slot of partialSums and unusable.
                    forEachDisjointPart(parts) { part in
                        let firstGroup = groups * part / parts, lastGroup = groups * (part + 1) / parts
                        let first = firstGroup * group, last = min(chunkRows, lastGroup * group)
                        let offset = first * width
                        let range = (elements.lowerBound + offset)..<(elements.lowerBound + last * width)
                        if let found = source.firstUnusableValue(in: range) {
                            unusable[part] = found
                            return
                        }
                        source.read(range, into: input + offset)
                        partialSums[part] = RowEncoder.encode(input + offset, rows: last - first, width: width, as: type,
                                                              importance: importance,
                                                              into: output + firstGroup * groupBytes, scratch: scratch + offset)
                    }
                }
            }
            if let found = unusable.lazy.compactMap({ $0 }).first { throw unusableValueError(name, source, found) }
            for (e, n) in partial {
                error += e
                norm += n
            }
            try sink.write(UnsafeRawBufferPointer(start: output, count: groups * groupBytes))
            source.release(elements)
            row += chunkRows
        }
        // Finite inputs bounded by maxWeightMagnitude keep both sums finite; norm 0 means all zeros.
        return norm == 0 ? 0 : (error / norm).squareRoot()
    }
}
