/// The reference library's integer color arithmetic, reproduced exactly so converted pixels are identical.
enum PILColor {
    /// One channel of CMYK -> RGB: `(255 - k) - round((255 - k) * c / 255)` in the reference's
    /// fixed-point form (a rounding division by 255 done with shifts).
    @inline(__always)
    static func cmykChannelToRGB(_ channel: UInt8, black: UInt8) -> UInt8 {
        let notBlack = 255 - Int(black)
        let product = Int(channel) * notBlack + 128
        let scaled = ((product >> 8) + product) >> 8
        return UInt8(clamping: notBlack - scaled)
    }

    /// One channel of a pixel with straight alpha `alpha` composited over opaque white with the reference's
    /// `alpha_composite` arithmetic (7 extra bits of precision, rounded division by 255).
    /// Alpha 0 gives 255 and alpha 255 gives the value unchanged.
    @inline(__always)
    static func compositeOnWhite(_ value: UInt8, alpha: UInt8) -> UInt8 {
        if alpha == 0 { return 255 }
        let a = UInt32(alpha)
        // With an opaque white destination: blend = 255 * (255 - a), out alpha * 255 = 255 * 255, so the
        // source coefficient a * 255 * 255 * 128 / (255 * 255) is exactly a * 128.
        let sourceWeight = a << 7
        let destinationWeight = (255 - a) << 7
        let sum = UInt32(value) * sourceWeight + 255 * destinationWeight + (0x80 << 7)
        return UInt8(truncatingIfNeeded: ((((sum >> 8) + sum) >> 8) >> 7))
    }
}
