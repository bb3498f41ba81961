import CImageDecode
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Chunks before the image data (read in Swift, as the reference reader reads them)

/// IHDR plus the chunks that decide how pixels become RGB. PLTE and tRNS are taken from the file as the
/// reference reader takes them (libpng would drop some malformed ones the reference still applies).
struct PNGPreamble: Equatable {
    var width: Int
    var height: Int
    var bitDepth: Int
    var colorType: Int
    var interlaced: Bool
    /// PLTE bytes (3 per entry), when present.
    var palette: [UInt8]?
    /// tRNS bytes, when present.
    var transparency: [UInt8]?
}

private let pngColorTypeBitDepths: [Int: Set<Int>] = [
    0: [1, 2, 4, 8, 16],  // gray
    2: [8, 16],  // RGB
    3: [1, 2, 4, 8],  // palette
    4: [8, 16],  // gray + alpha
    6: [8, 16],  // RGBA
]

/// Reads the chunks up to the first IDAT, checking each one's CRC as the reference reader does.
func scanPNGChunks(_ bytes: UnsafeRawBufferPointer, name: String) throws -> PNGPreamble {
    func bigEndian32(_ offset: Int) -> UInt32 {
        UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2]) << 8 | UInt32(bytes[offset + 3])
    }
    var preamble: PNGPreamble?
    var position = 8
    while true {
        guard position + 8 <= bytes.count else { throw ImageError.truncated(name: name) }
        let length = Int(bigEndian32(position))
        let typeBytes = (0..<4).map { bytes[position + 4 + $0] }
        let type = String(decoding: typeBytes, as: UTF8.self)
        guard length <= 0x7FFF_FFFF, typeBytes.allSatisfy({ (65...90).contains($0) || (97...122).contains($0) }) else {
            throw ImageError.corrupt(name: name, reason: "malformed PNG chunk header at byte \(position)")
        }
        if type == "IDAT" || type == "fdAT" {
            guard let preamble else { throw ImageError.corrupt(name: name, reason: "image data before the IHDR header") }
            return preamble
        }
        let dataStart = position + 8
        guard dataStart + length + 4 <= bytes.count else { throw ImageError.truncated(name: name) }
        let data = UnsafeRawBufferPointer(rebasing: bytes[dataStart..<dataStart + length])
        let computed = CRC32.checksum(data, seed: CRC32.checksum(UnsafeRawBufferPointer(rebasing: bytes[position + 4..<position + 8])))
        guard computed == bigEndian32(dataStart + length) else {
            throw ImageError.corrupt(name: name, reason: "bad checksum in the \(type) chunk")
        }
        if preamble == nil && type != "IHDR" {
            throw ImageError.corrupt(name: name, reason: "the first chunk is \(type), not IHDR")
        }
        switch type {
        case "IHDR":
            guard length >= 13 else { throw ImageError.corrupt(name: name, reason: "IHDR chunk of \(length) bytes") }
            let width = Int(bigEndian32(dataStart)), height = Int(bigEndian32(dataStart + 4))
            let bitDepth = Int(data[8]), colorType = Int(data[9])
            guard width > 0, height > 0, width <= 0x7FFF_FFFF, height <= 0x7FFF_FFFF else {
                throw ImageError.corrupt(name: name, reason: "the header declares \(width)x\(height) pixels")
            }
            guard let depths = pngColorTypeBitDepths[colorType], depths.contains(bitDepth) else {
                throw ImageError.unsupportedImage(name: name, reason: "PNG color type \(colorType) with bit depth \(bitDepth)")
            }
            guard data[10] == 0, data[11] == 0, data[12] <= 1 else {
                throw ImageError.corrupt(name: name, reason: "unknown PNG compression, filter or interlace method")
            }
            preamble = PNGPreamble(width: width, height: height, bitDepth: bitDepth, colorType: colorType,
                                   interlaced: data[12] == 1, palette: nil, transparency: nil)
        case "PLTE":
            preamble?.palette = Array(data)
        case "tRNS":
            preamble?.transparency = Array(data)
        case "IEND":
            throw ImageError.corrupt(name: name, reason: "no image data before IEND")
        default:
            break
        }
        position = dataStart + length + 4
    }
}

/// The CRC-32 of PNG chunks (and zlib): reflected polynomial 0xEDB88320.
enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { index in
        var value = UInt32(index)
        for _ in 0..<8 { value = value & 1 != 0 ? 0xEDB8_8320 ^ (value >> 1) : value >> 1 }
        return value
    }

    static func checksum(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        var crc = ~seed
        table.withUnsafeBufferPointer { table in
            for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        }
        return ~crc
    }
}

// MARK: - Public entry

/// Decodes a PNG and converts it to RGB exactly as the reference reader and processor do.
func decodePNG(_ bytes: UnsafeRawBufferPointer, name: String, options: ImageDecodeOptions) throws -> RGBImage {
    let preamble = try scanPNGChunks(bytes, name: name)
    try checkPixelLimit(width: preamble.width, height: preamble.height, name: name, options: options)
    let rule = try PNGConversion(preamble, name: name)
    guard let input = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { throw ImageError.emptyFile(name: name) }

    // libpng runs inside the C shim (CImageDecode): its fatal errors end there, as an outcome.
    var result = blip2_decode_result()
    let expected = blip2_png_header(width: UInt32(preamble.width), height: UInt32(preamble.height),
                                    bit_depth: Int32(preamble.bitDepth), color_type: Int32(preamble.colorType))
    blip2_decode_png(input, bytes.count, options.maxPixels, expected, &result)
    defer { free(result.pixels) }
    switch result.outcome {
    case BLIP2_DECODE_DECODED:
        break
    case BLIP2_DECODE_LIBRARY_ERROR:
        if result.ran_out_of_data != 0 { throw ImageError.truncated(name: name) }
        throw ImageError.corrupt(name: name, reason: "libpng: " + decodeMessage(result))
    case BLIP2_DECODE_TOO_MANY_PIXELS:
        throw ImageError.tooManyPixels(name: name, width: preamble.width, height: preamble.height, limit: options.maxPixels)
    case BLIP2_DECODE_OUT_OF_MEMORY:
        throw ImageError.decoderUnavailable(name: name, reason: "out of memory for \(preamble.width)x\(preamble.height) pixels")
    default:
        throw ImageError.corrupt(name: name, reason: "libpng read a different header than the IHDR chunk declares")
    }
    guard let pixels = result.pixels else { throw ImageError.corrupt(name: name, reason: "no pixels decoded") }
    let samples = UnsafeBufferPointer(start: pixels, count: result.row_bytes * preamble.height)
    return rule.convert(samples, rowBytes: result.row_bytes)
}

// MARK: - PNG samples -> RGB, following the reference reader's modes

/// How stored PNG samples become RGB in the reference pipeline. The reader maps each PNG type to one of
/// its modes (1-bit gray -> "1", 2/4/8-bit gray -> "L" rescaled to 0...255, 16-bit gray -> "I;16",
/// 16-bit color -> 8-bit by keeping the high byte, 16-bit gray+alpha -> "RGBA"), and the processor then
/// converts to RGB, compositing onto white when the image has an alpha band or a tRNS chunk.
/// A tRNS color key is compared, as the reference does, with the already-converted 8-bit pixel using
/// only the key's low byte.
struct PNGConversion {
    let width: Int
    let height: Int
    let bitDepth: Int
    let colorType: Int
    /// Gray (bit depth <= 8) and palette images: the final RGB for each stored sample value.
    private var lookup: [UInt8] = []
    /// Gray and RGB images: the color key, when tRNS is present.
    private var grayKey: UInt8?
    private var rgbKey: (UInt8, UInt8, UInt8)?

    init(_ preamble: PNGPreamble, name: String) throws {
        width = preamble.width
        height = preamble.height
        bitDepth = preamble.bitDepth
        colorType = preamble.colorType
        let transparency = preamble.transparency
        switch colorType {
        case 0:
            if let transparency {
                guard transparency.count >= 2 else { throw ImageError.corrupt(name: name, reason: "tRNS chunk too short") }
                let key = Int(transparency[0]) << 8 | Int(transparency[1])
                // 1-bit images become mode "1", whose key is stored as 0 or 255.
                grayKey = bitDepth == 1 ? (key != 0 ? 255 : 0) : UInt8(key & 0xFF)
            }
            if bitDepth <= 8 {
                let maximum = (1 << bitDepth) - 1
                lookup = (0...255).map { sample in
                    let value = sample > maximum ? 0 : UInt8(sample * 255 / maximum)
                    return value == grayKey ? 255 : value
                }
            }
        case 2:
            if let transparency {
                guard transparency.count >= 6 else { throw ImageError.corrupt(name: name, reason: "tRNS chunk too short") }
                rgbKey = (transparency[1], transparency[3], transparency[5])
            }
        case 3:
            guard let palette = preamble.palette else {
                throw ImageError.corrupt(name: name, reason: "a palette image without a PLTE chunk")
            }
            let entries = min(palette.count / 3, 256)
            var table = [UInt8](repeating: 0, count: 256 * 3)
            for index in 0..<256 {
                let alpha: UInt8 = transparency.map { index < $0.count ? $0[index] : 255 } ?? 255
                for channel in 0..<3 {
                    let value = index < entries ? palette[index * 3 + channel] : 0
                    table[index * 3 + channel] = PILColor.compositeOnWhite(value, alpha: alpha)
                }
            }
            lookup = table
        default:
            break  // alpha bands carry their own transparency; tRNS is ignored, as the reference does
        }
    }

    func convert(_ samples: UnsafeBufferPointer<UInt8>, rowBytes: Int) -> RGBImage {
        let pixelCount = width * height
        let rgb = [UInt8](unsafeUninitializedCapacity: pixelCount * 3) { output, initialized in
            lookup.withUnsafeBufferPointer { lookup in
                for y in 0..<height {
                    let row = UnsafeBufferPointer(rebasing: samples[y * rowBytes..<(y + 1) * rowBytes])
                    let out = UnsafeMutableBufferPointer(rebasing: output[y * width * 3..<(y + 1) * width * 3])
                    convertRow(row, into: out, lookup: lookup)
                }
            }
            initialized = pixelCount * 3
        }
        return RGBImage(width: width, height: height, pixels: rgb)
    }

    private func convertRow(_ row: UnsafeBufferPointer<UInt8>, into out: UnsafeMutableBufferPointer<UInt8>,
                            lookup: UnsafeBufferPointer<UInt8>) {
        let wide = bitDepth == 16
        switch colorType {
        case 0 where !wide:
            for x in 0..<width {
                let value = lookup[Int(row[x])]
                out[3 * x] = value; out[3 * x + 1] = value; out[3 * x + 2] = value
            }
        case 0:
            for x in 0..<width {
                // Mode "I;16" to RGB saturates instead of scaling.
                var value = row[2 * x] != 0 ? 255 : row[2 * x + 1]
                if value == grayKey { value = 255 }
                out[3 * x] = value; out[3 * x + 1] = value; out[3 * x + 2] = value
            }
        case 2:
            let step = wide ? 2 : 1
            for x in 0..<width {
                var red = row[3 * step * x], green = row[3 * step * x + step], blue = row[3 * step * x + 2 * step]
                if let key = rgbKey, red == key.0, green == key.1, blue == key.2 { (red, green, blue) = (255, 255, 255) }
                out[3 * x] = red; out[3 * x + 1] = green; out[3 * x + 2] = blue
            }
        case 3:
            for x in 0..<width {
                let entry = Int(row[x]) * 3
                out[3 * x] = lookup[entry]; out[3 * x + 1] = lookup[entry + 1]; out[3 * x + 2] = lookup[entry + 2]
            }
        case 4:
            let step = wide ? 2 : 1
            for x in 0..<width {
                let value = PILColor.compositeOnWhite(row[2 * step * x], alpha: row[2 * step * x + step])
                out[3 * x] = value; out[3 * x + 1] = value; out[3 * x + 2] = value
            }
        default:
            let step = wide ? 2 : 1
            for x in 0..<width {
                let alpha = row[4 * step * x + 3 * step]
                out[3 * x] = PILColor.compositeOnWhite(row[4 * step * x], alpha: alpha)
                out[3 * x + 1] = PILColor.compositeOnWhite(row[4 * step * x + step], alpha: alpha)
                out[3 * x + 2] = PILColor.compositeOnWhite(row[4 * step * x + 2 * step], alpha: alpha)
            }
        }
    }
}
