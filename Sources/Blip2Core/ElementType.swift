import CKernels

/// How a tensor's elements are stored. Raw values are written into model files and mirror `blip2_type`
/// in the C kernels; block sizes and byte counts come from the C traits table, never from here.
public enum ElementType: UInt32, CaseIterable, Sendable, CustomStringConvertible {
    case f32 = 0
    case f16 = 1
    case bf16 = 2
    case q8 = 8
    case q4 = 9

    private var traits: blip2_type_traits { blip2_traits(rawValue)!.pointee }

    /// The name tools print and accept: "f32", "f16", "bf16", "q8", "q4".
    public var name: String { String(cString: traits.name) }
    /// Elements sharing one scale (1 for plain floating point types).
    public var blockElements: Int { Int(traits.block_elements) }
    /// Bytes one block occupies.
    public var blockBytes: Int { Int(traits.block_bytes) }
    public var isQuantized: Bool { traits.quantized }
    public var description: String { name }

    public init?(name: String) {
        guard let match = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = match
    }

    /// Bytes needed for `count` elements, or nil when `count` is not a whole number of blocks or the
    /// product overflows (both happen with hostile files).
    public func byteCount(elements count: Int) -> Int? {
        guard count >= 0, count % blockElements == 0 else { return nil }
        let (bytes, overflow) = (count / blockElements).multipliedReportingOverflow(by: blockBytes)
        return overflow ? nil : bytes
    }

    /// Whether a tensor of this logical shape can be stored with this type: quantized types block
    /// the last (input-channel) dimension.
    public func canStore(shape: [Int]) -> Bool {
        guard isQuantized else { return true }
        guard let last = shape.last, shape.count >= 2 else { return false }
        return last % blockElements == 0
    }
}

/// Product of dimensions with overflow checking; nil on overflow or a negative dimension.
public func elementCount(_ shape: [Int]) -> Int? {
    var total = 1
    for dim in shape {
        guard dim >= 0 else { return nil }
        let (product, overflow) = total.multipliedReportingOverflow(by: dim)
        if overflow { return nil }
        total = product
    }
    return total
}
