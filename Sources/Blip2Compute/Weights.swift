import Blip2Core
import CKernels

// MARK: - Weights as views into memory the caller owns (the model file's mapping, mostly)

/// A [rows, cols] matrix stored as any element type: rows in groups of `type.blockRows` (panels for the
/// panel types), quantized types blocking along `cols`.
// @unchecked Sendable: points into a read-only mapping (or a buffer filled once at load).
public struct WeightMatrix: @unchecked Sendable {
    public let name: String
    public let type: ElementType
    public let rows: Int
    public let cols: Int
    public let data: UnsafeRawPointer
    /// Bytes of one stored row group (a row, or a panel).
    public let groupBytes: Int

    /// A matrix over `data`, which must hold `rows` rows of `type` (checked by the caller: the model file
    /// validates every tensor's size against its shape).
    public init(name: String, type: ElementType, rows: Int, cols: Int, data: UnsafeRawPointer) {
        self.name = name
        self.type = type
        self.rows = rows
        self.cols = cols
        self.data = data
        groupBytes = type.groupBytes(cols: cols) ?? 0
    }

    /// Row `r` as f32 into `destination` (cols values).
    @inlinable
    public func dequantizeRow(_ r: Int, into destination: UnsafeMutablePointer<Float>) {
        type.traits.to_f32(data, r, cols, destination)
    }
}

/// y = x W^T + b, W: [out, in].
// @unchecked Sendable: WeightMatrix views, read-only.
public struct Linear: @unchecked Sendable {
    public let weight: WeightMatrix
    public let bias: UnsafePointer<Float>?

    public init(_ weight: WeightMatrix, bias: UnsafePointer<Float>?) {
        self.weight = weight
        self.bias = bias
    }
}

// @unchecked Sendable: WeightMatrix views, read-only.
public struct LayerNormWeights: @unchecked Sendable {
    public let weight: UnsafePointer<Float>?
    public let bias: UnsafePointer<Float>?
    public let dim: Int
    public let eps: Float

    public init(weight: UnsafePointer<Float>?, bias: UnsafePointer<Float>?, dim: Int, eps: Float) {
        self.weight = weight
        self.bias = bias
        self.dim = dim
        self.eps = eps
    }
}
