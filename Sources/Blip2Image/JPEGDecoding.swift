import CImageDecode
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Frame header (read in Swift, before libjpeg sees the data)

/// What the first start-of-frame marker of a JPEG declares.
struct JPEGFrameHeader: Equatable {
    var width: Int
    var height: Int
    var precision: Int
    var components: Int
    /// Arithmetic-coded (SOF9 to SOF15): no lower bound on the bits per block.
    var arithmetic = false
}

enum JPEGHeaderScan: Equatable {
    case frame(JPEGFrameHeader)
    /// The data ends before any start-of-frame marker.
    case endsBeforeFrame
    /// A start-of-scan or end-of-image marker comes before any frame: libjpeg will say what is wrong.
    case noFrame
    /// A reserved marker code, which neither the reference reader nor libjpeg accepts.
    case invalidMarker(offset: Int)
}

/// Walks the marker segments up to the first start-of-frame, the way the reference reader does, so the
/// pixel limit and the supported sample formats are checked before the library allocates anything.
func scanJPEGHeader(_ bytes: UnsafeRawBufferPointer) -> JPEGHeaderScan {
    var position = 2  // after SOI
    let count = bytes.count
    while true {
        // Skip to the next 0xFF, then over fill bytes.
        while position < count && bytes[position] != 0xFF { position += 1 }
        while position < count && bytes[position] == 0xFF { position += 1 }
        guard position < count else { return .endsBeforeFrame }
        let marker = bytes[position]
        position += 1
        switch marker {
        case 0x00, 0x01, 0xD0...0xD7:
            continue  // stuffed byte, TEM, restart markers: no length
        case 0xD8:
            continue
        case 0xD9, 0xDA:
            return .noFrame
        case 0x02...0xBF:
            return .invalidMarker(offset: position - 2)
        default:
            break
        }
        guard position + 2 <= count else { return .endsBeforeFrame }
        let length = Int(bytes[position]) << 8 | Int(bytes[position + 1])
        let isStartOfFrame = (0xC0...0xCF).contains(marker) && marker != 0xC4 && marker != 0xC8 && marker != 0xCC
        if isStartOfFrame {
            guard position + 8 <= count else { return .endsBeforeFrame }
            let precision = Int(bytes[position + 2])
            let height = Int(bytes[position + 3]) << 8 | Int(bytes[position + 4])
            let width = Int(bytes[position + 5]) << 8 | Int(bytes[position + 6])
            let components = Int(bytes[position + 7])
            return .frame(JPEGFrameHeader(width: width, height: height, precision: precision, components: components,
                                          arithmetic: marker >= 0xC9))
        }
        if length < 2 {
            // libjpeg skips the segments it does not interpret (APPn, COM, DNL) by length - 2 bytes, so a
            // length of 0 or 1 skips nothing past the length itself and decoding goes on; any other
            // segment that short is an error there, reported precisely by the decode.
            guard (0xE0...0xEF).contains(marker) || marker == 0xFE || marker == 0xDC else { return .noFrame }
            position += 2
            continue
        }
        position += length
    }
}

// MARK: - Public entry

/// Decodes a JPEG and converts it to RGB as the reference processor does: grayscale is replicated, and
/// 4-component (CMYK or YCCK) images are read as Adobe-inverted CMYK, the convention the reference reader
/// always assumes, then converted with its integer CMYK -> RGB formula.
func decodeJPEG(_ bytes: UnsafeRawBufferPointer, name: String, options: ImageDecodeOptions) throws -> RGBImage {
    switch scanJPEGHeader(bytes) {
    case .endsBeforeFrame:
        throw ImageError.truncated(name: name)
    case .noFrame:
        break  // libjpeg reports the precise problem below
    case .invalidMarker(let offset):
        throw ImageError.corrupt(name: name, reason: "no valid JPEG marker at byte \(offset)")
    case .frame(let frame):
        try checkFrame(frame, dataBytes: bytes.count, name: name, options: options)
    }
    guard let input = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { throw ImageError.emptyFile(name: name) }

    // libjpeg runs inside the C shim (CImageDecode): its fatal errors end there, as an outcome.
    var result = blip2_decode_result()
    blip2_decode_jpeg(input, bytes.count, options.maxPixels, Int32(clamping: options.maxJPEGScans), &result)
    defer { free(result.pixels) }
    let width = result.width, height = result.height, components = result.components
    switch result.outcome {
    case BLIP2_DECODE_DECODED:
        break
    case BLIP2_DECODE_LIBRARY_ERROR:
        if result.out_of_backing_store != 0 {
            throw ImageError.corrupt(name: name, reason: "the header declares \(width)x\(height) pixels, more than \(bytes.count) bytes of progressive JPEG data can describe")
        }
        if result.ran_out_of_data != 0 { throw ImageError.truncated(name: name) }
        throw ImageError.corrupt(name: name, reason: "libjpeg: " + decodeMessage(result))
    case BLIP2_DECODE_TRUNCATED:
        throw ImageError.truncated(name: name)
    case BLIP2_DECODE_UNSUPPORTED_PRECISION:
        throw ImageError.unsupportedImage(name: name, reason: "JPEG samples are not 8-bit")
    case BLIP2_DECODE_UNSUPPORTED_COMPONENTS:
        throw ImageError.unsupportedImage(name: name, reason: "JPEG with \(components) color components")
    case BLIP2_DECODE_UNEXPECTED_OUTPUT_SIZE:
        throw ImageError.corrupt(name: name, reason: "libjpeg would output a different size than the frame header declares")
    case BLIP2_DECODE_TOO_MANY_SCANS:
        throw ImageError.unsupportedImage(name: name, reason: "a progressive JPEG with more than \(options.maxJPEGScans) scans")
    case BLIP2_DECODE_TOO_MANY_PIXELS:
        throw ImageError.tooManyPixels(name: name, width: width, height: height, limit: options.maxPixels)
    case BLIP2_DECODE_OUT_OF_MEMORY:
        throw ImageError.decoderUnavailable(name: name, reason: "out of memory for \(width)x\(height) pixels")
    default:
        throw ImageError.corrupt(name: name, reason: "libjpeg stopped without saying why")
    }
    guard let pixels = result.pixels, width > 0, height > 0 else {
        throw ImageError.corrupt(name: name, reason: "no pixels decoded")
    }
    let samples = UnsafeBufferPointer(start: pixels, count: width * height * components)
    return jpegSamplesToRGB(samples, width: width, height: height, components: components)
}

private func checkFrame(_ frame: JPEGFrameHeader, dataBytes: Int, name: String, options: ImageDecodeOptions) throws {
    guard frame.precision == 8 else {
        throw ImageError.unsupportedImage(name: name, reason: "\(frame.precision)-bit JPEG samples (only 8-bit are read)")
    }
    guard [1, 3, 4].contains(frame.components) else {
        throw ImageError.unsupportedImage(name: name, reason: "JPEG with \(frame.components) color components (1, 3 or 4 are read)")
    }
    guard frame.width > 0, frame.height > 0 else {
        throw ImageError.corrupt(name: name, reason: "the frame header declares \(frame.width)x\(frame.height) pixels")
    }
    try checkPixelLimit(width: frame.width, height: frame.height, name: name, options: options)
    // Huffman coding spends at least one bit on every 8x8 block (its DC code), so a file of n bytes
    // describes at most 8n blocks of the full-resolution component: 512n pixels. A header claiming more
    // (8000x8000 over a thumbnail's few kilobytes) would only buy hundreds of megabytes of filler.
    let blocks = ((frame.width + 7) / 8) * ((frame.height + 7) / 8)
    if !frame.arithmetic, blocks > 8 * dataBytes {
        throw ImageError.corrupt(name: name, reason: "the header declares \(frame.width)x\(frame.height) pixels, more than \(dataBytes) bytes of JPEG data can describe")
    }
}

private func jpegSamplesToRGB(_ samples: UnsafeBufferPointer<UInt8>, width: Int, height: Int, components: Int) -> RGBImage {
    let pixelCount = width * height
    let rgb = [UInt8](unsafeUninitializedCapacity: pixelCount * 3) { output, initialized in
        switch components {
        case 1:
            for i in 0..<pixelCount {
                let value = samples[i]
                output[3 * i] = value
                output[3 * i + 1] = value
                output[3 * i + 2] = value
            }
        case 3:
            for i in 0..<pixelCount * 3 { output[i] = samples[i] }
        default:
            for i in 0..<pixelCount {
                // The stored values are inverted (Adobe convention): undo that, then convert.
                let cyan = 255 - samples[4 * i], magenta = 255 - samples[4 * i + 1]
                let yellow = 255 - samples[4 * i + 2], black = 255 - samples[4 * i + 3]
                output[3 * i] = PILColor.cmykChannelToRGB(cyan, black: black)
                output[3 * i + 1] = PILColor.cmykChannelToRGB(magenta, black: black)
                output[3 * i + 2] = PILColor.cmykChannelToRGB(yellow, black: black)
            }
        }
        initialized = pixelCount * 3
    }
    return RGBImage(width: width, height: height, pixels: rgb)
}
