import Blip2Compute
import Blip2Configs
import Blip2Core
import Blip2ModelFile
import CKernels

// MARK: - Loading weights as views into the model file
//
// Every weight is a pointer into the mapping (or the decompressed buffer the ModelFile owns), checked
// against the shape the configuration implies when it is looked up. The loader remembers every key it
// hands out; once the model is built, those keys must be exactly the manifest's and the file's.

public struct ModelLoadError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// Looks weights up by Hugging Face key, checks them, and records what was used.
final class WeightLoader {
    let file: ModelFile
    /// Vectors stored as f16 are widened once into memory the model keeps.
    private(set) var widened: [UnsafeMutablePointer<Float>] = []
    private var consumed: Set<String> = []

    init(file: ModelFile) { self.file = file }

    deinit { releaseUnclaimed() }

    func record(_ name: String, shape: [Int]) throws -> TensorRecord {
        guard let record = file.tensor(named: name) else {
            throw ModelLoadError(message: "\(file.path): the model file has no tensor '\(name)'; it does not match its own config (convert it again)")
        }
        guard record.shape == shape else {
            throw ModelLoadError(message: "\(file.path): tensor '\(name)' has shape \(record.shape), the config implies \(shape)")
        }
        consumed.insert(name)
        return record
    }

    func matrix(_ name: String, rows: Int, cols: Int, shape: [Int]? = nil) throws -> WeightMatrix {
        let record = try record(name, shape: shape ?? [rows, cols])
        guard record.type.isWritable else { throw ModelLoadError(message: "\(file.path): '\(name)' is \(record.type), which the runtime does not read") }
        let data = try file.data(of: record)
        return WeightMatrix(name: name, type: record.type, rows: rows, cols: cols, data: data.baseAddress!)
    }

    /// A float vector; other types are widened once into memory the loader keeps for the model.
    func vector(_ name: String, count: Int, shape: [Int]? = nil) throws -> UnsafePointer<Float> {
        let record = try record(name, shape: shape ?? [count])
        let data = try file.data(of: record)
        if record.type == .f32 { return data.baseAddress!.assumingMemoryBound(to: Float.self) }
        let widened = UnsafeMutablePointer<Float>.allocate(capacity: count)
        guard record.type.blockRows == 1, blip2_to_f32(record.type.rawValue, data.baseAddress, widened, count) else {
            widened.deallocate()
            throw ModelLoadError(message: "\(file.path): cannot read '\(name)' as \(record.type)")
        }
        self.widened.append(widened)
        return UnsafePointer(widened)
    }

    func linear(_ prefix: String, out: Int, in inputs: Int, bias: Bool = true) throws -> Linear {
        Linear(try matrix("\(prefix).weight", rows: out, cols: inputs), bias: bias ? try vector("\(prefix).bias", count: out) : nil)
    }

    func layerNorm(_ prefix: String, dim: Int, eps: Double, affine: Bool = true) throws -> LayerNormWeights {
        LayerNormWeights(weight: affine ? try vector("\(prefix).weight", count: dim) : nil,
                         bias: affine ? try vector("\(prefix).bias", count: dim) : nil,
                         dim: dim, eps: Float(eps))
    }

    /// The keys used must be the manifest's, and the file must hold nothing else: a key missing on either
    /// side, or left over, means the model code and the manifest disagree, or the file was not written for
    /// this configuration.
    func checkComplete(against manifest: WeightManifest) throws {
        let expected = Set(manifest.weights.map(\.name))
        if let name = expected.subtracting(consumed).sorted().first {
            throw ModelLoadError(message: "\(file.path): weight '\(name)' of the configuration is never used by the model")
        }
        if let name = consumed.subtracting(expected).sorted().first {
            throw ModelLoadError(message: "\(file.path): the model used '\(name)', which its configuration does not list")
        }
        if let name = file.tensors.map(\.name).filter({ !consumed.contains($0) }).sorted().first {
            throw ModelLoadError(message: "\(file.path): tensor '\(name)' is not a weight of this configuration (convert the checkpoint again)")
        }
    }

    /// Hands the widened vectors to the model (which frees them); the loader frees only what is left if
    /// loading failed part way.
    func claimWidened() -> [UnsafeMutablePointer<Float>] {
        defer { widened = [] }
        return widened
    }

    private func releaseUnclaimed() { for pointer in widened { pointer.deallocate() } }
}
