import CPNG
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

// MARK: - libpng driver (runs on a guarded thread)

/// Everything the decoding thread reads and writes. Plain values and raw pointers only: see GuardedThread.
private struct PNGDecodeJob {
    enum Outcome { case notFinished, decoded, headerMismatch, tooManyPixels, outOfMemory }

    var input: UnsafePointer<UInt8>
    var inputCount: Int
    var position = 0
    var expected: (width: Int, height: Int, bitDepth: Int, colorType: Int)
    var maxPixels: Int
    var message: UnsafeMutablePointer<CChar>
    static let messageCapacity = 256

    var reader: png_structp? = nil
    var info: png_infop? = nil
    var outcome = Outcome.notFinished
    var libraryFailed = false
    var ranOutOfData = false
    var rowBytes = 0
    var pixels: UnsafeMutablePointer<UInt8>? = nil
    var rows: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>? = nil
}

private let pngFatalError: png_error_ptr = { reader, message in
    if let job = png_get_error_ptr(reader)?.assumingMemoryBound(to: PNGDecodeJob.self) {
        if let message {
            strncpy(job.pointee.message, message, PNGDecodeJob.messageCapacity - 1)
        }
        job.pointee.libraryFailed = true
    }
    GuardedThread.abandon()
}

private let pngWarning: png_error_ptr = { _, _ in }

private let pngRead: png_rw_ptr = { reader, destination, count in
    guard let job = png_get_io_ptr(reader)?.assumingMemoryBound(to: PNGDecodeJob.self), let destination else {
        png_error(reader, "no input")
    }
    let available = job.pointee.inputCount - job.pointee.position
    guard count <= available else {
        job.pointee.ranOutOfData = true
        png_error(reader, "the data ends early")
    }
    memcpy(destination, job.pointee.input + job.pointee.position, count)
    job.pointee.position += count
}

private func decodePNGOnCurrentThread(_ job: UnsafeMutablePointer<PNGDecodeJob>) {
    guard let reader = png_create_read_struct(PNG_LIBPNG_VER_STRING, job, pngFatalError, pngWarning) else {
        job.pointee.outcome = .outOfMemory
        return
    }
    job.pointee.reader = reader
    guard let info = png_create_info_struct(reader) else {
        job.pointee.outcome = .outOfMemory
        return
    }
    job.pointee.info = info
    png_set_read_fn(reader, job, pngRead)
    // The reference reader ignores the CRCs of image data chunks; those before the image data were
    // already checked by scanPNGChunks.
    png_set_crc_action(reader, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE)
    png_read_info(reader, info)

    var width: png_uint_32 = 0, height: png_uint_32 = 0
    var bitDepth: Int32 = 0, colorType: Int32 = 0, interlace: Int32 = 0
    png_get_IHDR(reader, info, &width, &height, &bitDepth, &colorType, &interlace, nil, nil)
    let expected = job.pointee.expected
    guard Int(width) == expected.width, Int(height) == expected.height,
          Int(bitDepth) == expected.bitDepth, Int(colorType) == expected.colorType
    else {
        job.pointee.outcome = .headerMismatch
        return
    }
    guard expected.width.multipliedReportingOverflow(by: expected.height).partialValue <= job.pointee.maxPixels else {
        job.pointee.outcome = .tooManyPixels
        return
    }
    // Samples are kept as stored: sub-byte ones spread to a byte each (not rescaled), 16-bit ones big-endian.
    if bitDepth < 8 { png_set_packing(reader) }
    if interlace != PNG_INTERLACE_NONE { _ = png_set_interlace_handling(reader) }
    png_read_update_info(reader, info)

    let rowBytes = Int(png_get_rowbytes(reader, info))
    let channels = Int(png_get_channels(reader, info))
    guard rowBytes == expected.width * channels * (bitDepth == 16 ? 2 : 1) else {
        job.pointee.outcome = .headerMismatch
        return
    }
    job.pointee.rowBytes = rowBytes
    let rowCount = expected.height
    guard let pixels = malloc(rowBytes * rowCount)?.assumingMemoryBound(to: UInt8.self) else {
        job.pointee.outcome = .outOfMemory
        return
    }
    job.pointee.pixels = pixels
    guard let rows = malloc(rowCount * MemoryLayout<UnsafeMutablePointer<UInt8>?>.stride)?
        .assumingMemoryBound(to: UnsafeMutablePointer<UInt8>?.self)
    else {
        job.pointee.outcome = .outOfMemory
        return
    }
    job.pointee.rows = rows
    for row in 0..<rowCount { rows[row] = pixels + row * rowBytes }
    png_read_image(reader, rows)
    job.pointee.outcome = .decoded
}

private let pngThreadBody: GuardedThreadBody = { argument in
    decodePNGOnCurrentThread(argument.assumingMemoryBound(to: PNGDecodeJob.self))
}

// MARK: - Public entry (calling thread)

/// Decodes a PNG and converts it to RGB exactly as the reference reader and processor do.
func decodePNG(_ bytes: UnsafeRawBufferPointer, name: String, options: ImageDecodeOptions) throws -> RGBImage {
    let preamble = try scanPNGChunks(bytes, name: name)
    try checkPixelLimit(width: preamble.width, height: preamble.height, name: name, options: options)
    let rule = try PNGConversion(preamble, name: name)
    guard let input = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { throw ImageError.emptyFile(name: name) }

    let message = UnsafeMutablePointer<CChar>.allocate(capacity: PNGDecodeJob.messageCapacity)
    message.initialize(repeating: 0, count: PNGDecodeJob.messageCapacity)
    let job = UnsafeMutablePointer<PNGDecodeJob>.allocate(capacity: 1)
    job.initialize(to: PNGDecodeJob(
        input: input, inputCount: bytes.count,
        expected: (preamble.width, preamble.height, preamble.bitDepth, preamble.colorType),
        maxPixels: options.maxPixels, message: message))
    defer {
        // Safe whether the thread finished, gave up, or never started: libpng owns its memory.
        if job.pointee.reader != nil { png_destroy_read_struct(&job.pointee.reader, &job.pointee.info, nil) }
        free(job.pointee.pixels)
        free(job.pointee.rows)
        job.deinitialize(count: 1); job.deallocate()
        message.deallocate()
    }

    if let failure = GuardedThread.run(pngThreadBody, argument: UnsafeMutableRawPointer(job)) {
        throw ImageError.decoderUnavailable(name: name, reason: failure)
    }
    let result = job.pointee
    if result.libraryFailed {
        if result.ranOutOfData { throw ImageError.truncated(name: name) }
        throw ImageError.corrupt(name: name, reason: "libpng: " + String(cString: message))
    }
    switch result.outcome {
    case .notFinished, .headerMismatch:
        throw ImageError.corrupt(name: name, reason: "libpng read a different header than the IHDR chunk declares")
    case .tooManyPixels:
        throw ImageError.tooManyPixels(name: name, width: preamble.width, height: preamble.height, limit: options.maxPixels)
    case .outOfMemory:
        throw ImageError.decoderUnavailable(name: name, reason: "out of memory for \(preamble.width)x\(preamble.height) pixels")
    case .decoded:
        break
    }
    guard let pixels = result.pixels else { throw ImageError.corrupt(name: name, reason: "no pixels decoded") }
    let samples = UnsafeBufferPointer(start: pixels, count: result.rowBytes * preamble.height)
    return rule.convert(samples, rowBytes: result.rowBytes)
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
