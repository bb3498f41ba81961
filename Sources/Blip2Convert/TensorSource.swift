import Blip2Core
import Blip2ModelFile
import CKernels

// Where a model weight's values come from: a checkpoint tensor read in place, or (for checkpoints that
// store the vision attention bias as separate q_bias / v_bias) the fused [q_bias, 0, v_bias] vector.
enum TensorSource {
    case stored(SafeTensorsFile, SafeTensorsEntry)
    case fused(values: [Float], dtype: String)

    var dtypeName: String {
        switch self {
        case .stored(_, let entry): return entry.dtype.description
        case .fused(_, let dtype): return dtype
        }
    }

    var elementCount: Int {
        switch self {
        case .stored(_, let entry): return entry.elementCount
        case .fused(let values, _): return values.count
        }
    }

    /// The stored bytes when they already are `type`: f32 -> f32 and f16 -> f16 copy bit for bit.
    func rawBytes(ifStoredAs type: ElementType) -> UnsafeRawBufferPointer? {
        guard case .stored(let file, let entry) = self else { return nil }
        switch (entry.dtype, type) {
        case (.f32, .f32), (.f16, .f16), (.bf16, .bf16): return file.bytes(of: entry)
        default: return nil
        }
    }

    /// Converts elements `range` to f32.
    func read(_ range: Range<Int>, into destination: UnsafeMutablePointer<Float>) {
        switch self {
        case .stored(let file, let entry):
            let bytes = file.bytes(of: entry)
            let size = entry.dtype.byteSize
            let start = bytes.baseAddress! + range.lowerBound * size
            switch entry.dtype {
            case .f32:
                destination.update(from: start.assumingMemoryBound(to: Float.self), count: range.count)
            case .f16:
                HalfConversion.f16ToF32(start.assumingMemoryBound(to: UInt16.self), destination, count: range.count)
            case .bf16:
                HalfConversion.bf16ToF32(start.assumingMemoryBound(to: UInt16.self), destination, count: range.count)
            case .other:
                preconditionFailure("unsupported dtypes are rejected before conversion")
            }
        case .fused(let values, _):
            values.withUnsafeBufferPointer { destination.update(from: $0.baseAddress! + range.lowerBound, count: range.count) }
        }
    }

    /// The first element of `range` that is not a usable weight (NaN, infinite, or beyond
    /// `Converter.maxWeightMagnitude`), read straight from the stored bytes.
    func firstUnusableValue(in range: Range<Int>) -> (index: Int, value: Float)? {
        switch self {
        case .stored(let file, let entry):
            let base = file.bytes(of: entry).baseAddress!
            switch entry.dtype {
            case .f32:
                let values = base.assumingMemoryBound(to: Float.self)
                for i in range where !Converter.isUsable(values[i]) { return (i, values[i]) }
            case .f16:
                // An f16 is never beyond the limit; all-ones exponent bits are its infinities and NaNs.
                let bits = base.assumingMemoryBound(to: UInt16.self)
                for i in range where bits[i] & 0x7C00 == 0x7C00 {
                    var value: Float = 0
                    HalfConversion.f16ToF32(bits + i, &value, count: 1)
                    return (i, value)
                }
            case .bf16:
                let bits = base.assumingMemoryBound(to: UInt16.self)
                for i in range {
                    let value = Float(bitPattern: UInt32(bits[i]) << 16)
                    if !Converter.isUsable(value) { return (i, value) }
                }
            case .other:
                return nil
            }
        case .fused(let values, _):
            for i in range where !Converter.isUsable(values[i]) { return (i, values[i]) }
        }
        return nil
    }

    /// Lets the kernel drop the pages already converted, so resident memory stays flat.
    func release(_ range: Range<Int>) {
        guard case .stored(let file, let entry) = self else { return }
        let size = entry.dtype.byteSize
        file.file.release((entry.range.lowerBound + range.lowerBound * size)..<(entry.range.lowerBound + range.upperBound * size))
    }
}

/// Encodes f32 rows into a stored type and measures what that lost.
enum RowEncoder {
    /// Encodes `rows` rows of `width` f32 values into `output` (whole row groups of the type, the last padded)
    /// and returns the squared error and squared norm, summed.
    /// `importance` (one value per column) weights the fit of types that have one.
    static func encode(_ input: UnsafePointer<Float>, rows: Int, width: Int, as type: ElementType, importance: [Float]? = nil,
                       into output: UnsafeMutableRawPointer, scratch: UnsafeMutablePointer<Float>) -> (error: Double, norm: Double) {
        let traits = type.traits
        precondition(traits.from_f32 != nil, "\(type) is a source format only")
        if let importance, let weighted = traits.from_f32_weighted, importance.count == width {
            importance.withUnsafeBufferPointer { weighted(input, rows, width, $0.baseAddress!, output) }
        } else {
            traits.from_f32(input, rows, width, output)
        }
        var error = 0.0, norm = 0.0
        for r in 0..<rows {
            traits.to_f32(output, r, width, scratch)
            for i in 0..<width {
                let x = Double(input[r * width + i]), d = x - Double(scratch[i])
                error += d * d
                norm += x * x
            }
        }
        return (error, norm)
    }
}
