import CKernels

/// How a tensor's elements are stored: a value of `blip2_type`, written into model files. Everything about
/// a type (name, block shape and bytes, conversions, the activations its products take) is its row in the
/// C traits table (`blip2_traits`); the constants below only name the rows.
public struct ElementType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32

    /// nil for a value with no row in the traits table (e.g. read from a hostile file).
    public init?(rawValue: UInt32) {
        guard blip2_traits(rawValue) != nil else { return nil }
        self.rawValue = rawValue
    }

    private init(_ type: blip2_type) { rawValue = type.rawValue }

    public static let f32 = ElementType(BLIP2_TYPE_F32)
    public static let f16 = ElementType(BLIP2_TYPE_F16)
    public static let bf16 = ElementType(BLIP2_TYPE_BF16)
    public static let q8 = ElementType(BLIP2_TYPE_Q8)
    public static let q4 = ElementType(BLIP2_TYPE_Q4)
    public static let q8p = ElementType(BLIP2_TYPE_Q8P)
    public static let q4p = ElementType(BLIP2_TYPE_Q4P)
    public static let q4k = ElementType(BLIP2_TYPE_Q4K)
    public static let q3k = ElementType(BLIP2_TYPE_Q3K)
    public static let q6k = ElementType(BLIP2_TYPE_Q6K)

    /// Every row of the traits table, in type-value order.
    public static let allCases: [ElementType] = (0..<BLIP2_TYPE_COUNT.rawValue).compactMap(ElementType.init(rawValue:))

    public var traits: blip2_type_traits { blip2_traits(rawValue)!.pointee }

    /// The name tools print and accept: "f32", "f16", "bf16", "q8", "q4", "q8p", "q4p", "q4k", "q3k", "q6k".
    public var name: String { String(cString: traits.name) }
    /// Rows one block spans (1; 8 for the panel types).
    public var blockRows: Int { Int(traits.block_rows) }
    /// Inputs of a row one block spans (1 for plain floating point types; 256 for the super-block types).
    public var blockElements: Int { Int(traits.block_elements) }
    /// Bytes one block occupies.
    public var blockBytes: Int { Int(traits.block_bytes) }
    /// A row's width must be a multiple of this: blockElements, or for the super-block types 32 (a row's last
    /// super-block may be shorter).
    public var widthMultiple: Int { Int(traits.tail_elements) }
    public var isQuantized: Bool { traits.quantized }
    /// Whether products quantize their activations (q8a or q8k) before meeting these weights.
    public var takesQuantizedActivations: Bool { traits.activation != BLIP2_ACTIVATION_F32 }
    /// The activation format products convert rows into for these weights.
    public var activation: blip2_activation { traits.activation }
    /// Whether the converter can fit it to an importance matrix.
    public var takesImportance: Bool { traits.from_f32_weighted != nil }
    /// Stored bits per weight of a matrix `cols` inputs wide (padding rows aside).
    public func bitsPerWeight(cols: Int) -> Double? {
        guard cols > 0, let bytes = groupBytes(cols: cols) else { return nil }
        return Double(bytes * 8) / Double(cols * blockRows)
    }
    /// Whether tools may write it (bf16 is only ever read from checkpoints).
    public var isWritable: Bool { traits.from_f32 != nil }
    public var description: String { name }

    public init?(name: String) {
        guard let match = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = match
    }

    /// Bytes of one row group (a row, or a panel of `blockRows` rows) of a matrix `cols` inputs wide; nil
    /// when `cols` is not a whole number of blocks or the product overflows.
    public func groupBytes(cols: Int) -> Int? {
        guard cols >= 0, cols % widthMultiple == 0 else { return nil }
        let (whole, overflow) = (cols / blockElements).multipliedReportingOverflow(by: blockBytes)
        guard !overflow else { return nil }
        let tail = cols % blockElements
        guard tail > 0 else { return whole }
        let header = Int(traits.header_bytes)
        return whole.addingReportingOverflow(header + tail * (blockBytes - header) / blockElements).overflow ? nil
            : whole + header + tail * (blockBytes - header) / blockElements
    }

    /// Bytes a tensor of this logical shape occupies: its last dimension is a row's inputs, the rest count
    /// rows, stored in groups of `blockRows` (the last padded). nil when the shape cannot be stored this way
    /// or the size overflows (both happen with hostile files).
    public func byteCount(shape: [Int]) -> Int? {
        guard canStore(shape: shape), let elements = elementCount(shape) else { return nil }
        let cols = shape.last ?? 1
        guard let group = groupBytes(cols: cols) else { return nil }
        let rows = cols == 0 ? 0 : elements / cols
        let groups = (rows + blockRows - 1) / blockRows
        let (bytes, overflow) = groups.multipliedReportingOverflow(by: group)
        return overflow ? nil : bytes
    }

    /// Whether a tensor of this logical shape can be stored with this type: quantized types block
    /// the last (input-channel) dimension of a matrix.
    public func canStore(shape: [Int]) -> Bool {
        guard isQuantized else { return true }
        guard let last = shape.last, shape.count >= 2 else { return false }
        return last % widthMultiple == 0
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
