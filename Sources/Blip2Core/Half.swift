import CKernels

/// Bulk conversions between stored half-precision data and f32.
public enum HalfConversion {
    public static func f16ToF32(_ src: UnsafePointer<UInt16>, _ dst: UnsafeMutablePointer<Float>, count: Int) {
        blip2_f16_to_f32_row(src, dst, count)
    }
    public static func bf16ToF32(_ src: UnsafePointer<UInt16>, _ dst: UnsafeMutablePointer<Float>, count: Int) {
        blip2_bf16_to_f32_row(src, dst, count)
    }
    public static func f32ToF16(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<UInt16>, count: Int) {
        blip2_f32_to_f16_row(src, dst, count)
    }
}
