import Blip2Core
import Blip2ModelFile
import CKernels

// MARK: - Weights as views into the model file
//
// Every weight is a pointer into the mapping (or the decompressed buffer the ModelFile owns), checked
// against the shape the configuration implies when it is looked up.

/// A [rows, cols] matrix stored as any element type; quantized types block along `cols`.
public struct WeightMatrix: @unchecked Sendable {
    public let name: String
    public let type: ElementType
    public let rows: Int
    public let cols: Int
    public let data: UnsafeRawPointer
    /// Bytes of one stored row.
    public let rowBytes: Int

    /// Row `r` as f32 into `destination` (cols values).
    @inlinable
    public func dequantizeRow(_ r: Int, into destination: UnsafeMutablePointer<Float>) {
        _ = blip2_to_f32(type.rawValue, data + r * rowBytes, destination, cols)
    }
}

/// y = x W^T + b, W: [out, in].
public struct Linear: @unchecked Sendable {
    public let weight: WeightMatrix
    public let bias: UnsafePointer<Float>?
}

public struct LayerNormWeights: @unchecked Sendable {
    public let weight: UnsafePointer<Float>?
    public let bias: UnsafePointer<Float>?
    public let dim: Int
    public let eps: Float
}

public struct ModelLoadError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// Looks weights up by Hugging Face key and checks them.
struct WeightLoader {
    let file: ModelFile

    func record(_ name: String, shape: [Int]) throws -> TensorRecord {
        guard let record = file.tensor(named: name) else {
            throw ModelLoadError(message: "\(file.path): the model file has no tensor '\(name)'; it does not match its own config (convert it again)")
        }
        guard record.shape == shape else {
            throw ModelLoadError(message: "\(file.path): tensor '\(name)' has shape \(record.shape), the config implies \(shape)")
        }
        return record
    }

    func matrix(_ name: String, rows: Int, cols: Int, shape: [Int]? = nil) throws -> WeightMatrix {
        let record = try record(name, shape: shape ?? [rows, cols])
        guard record.type != .bf16 else { throw ModelLoadError(message: "\(file.path): '\(name)' is bf16, which the runtime does not read") }
        let data = try file.data(of: record)
        return WeightMatrix(name: name, type: record.type, rows: rows, cols: cols, data: data.baseAddress!,
                            rowBytes: record.type.byteCount(elements: cols)!)
    }

    /// A float vector; f16 values are widened once into memory the loader keeps.
    func vector(_ name: String, count: Int, shape: [Int]? = nil, into storage: inout [UnsafeMutablePointer<Float>]) throws -> UnsafePointer<Float> {
        let record = try record(name, shape: shape ?? [count])
        let data = try file.data(of: record)
        if record.type == .f32 { return data.baseAddress!.assumingMemoryBound(to: Float.self) }
        let widened = UnsafeMutablePointer<Float>.allocate(capacity: count)
        guard blip2_to_f32(record.type.rawValue, data.baseAddress, widened, count) else {
            widened.deallocate()
            throw ModelLoadError(message: "\(file.path): cannot read '\(name)' as \(record.type)")
        }
        storage.append(widened)
        return UnsafePointer(widened)
    }

    func linear(_ prefix: String, out: Int, in inputs: Int, bias: Bool = true, into storage: inout [UnsafeMutablePointer<Float>]) throws -> Linear {
        Linear(weight: try matrix("\(prefix).weight", rows: out, cols: inputs),
               bias: bias ? try vector("\(prefix).bias", count: out, into: &storage) : nil)
    }

    func layerNorm(_ prefix: String, dim: Int, eps: Double, affine: Bool = true, into storage: inout [UnsafeMutablePointer<Float>]) throws -> LayerNormWeights {
        LayerNormWeights(weight: affine ? try vector("\(prefix).weight", count: dim, into: &storage) : nil,
                         bias: affine ? try vector("\(prefix).bias", count: dim, into: &storage) : nil,
                         dim: dim, eps: Float(eps))
    }
}
