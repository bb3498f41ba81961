import CJPEG
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

// MARK: - libjpeg driver (runs on a guarded thread)

/// The least memory libjpeg may use for one image, whatever its size in bytes.
private let jpegMinimumMemory = 256 << 20

/// Everything the decoding thread reads and writes. Plain values and raw pointers only: see GuardedThread.
private struct JPEGDecodeJob {
    enum Outcome {
        case notFinished, decoded, unsupportedColorComponents, unsupportedPrecision, unexpectedOutputSize
        case tooManyPixels, tooManyScans, outOfMemory, truncated
    }

    var input: UnsafePointer<UInt8>
    var inputCount: Int
    var maxPixels: Int
    var maxScans: Int
    var decompressor: UnsafeMutablePointer<jpeg_decompress_struct>
    var errorManager: UnsafeMutablePointer<jpeg_error_mgr>
    var source: UnsafeMutablePointer<jpeg_source_mgr>
    var progress: UnsafeMutablePointer<jpeg_progress_mgr>
    /// An end-of-image marker handed to libjpeg when the real data runs out.
    var endOfImageMarker: UnsafeMutablePointer<UInt8>
    var message: UnsafeMutablePointer<CChar>

    var outcome = Outcome.notFinished
    var libraryFailed = false
    var ranOutOfData = false
    var allRowsRead = false
    var ranOutOfDataBeforeLastRow = false
    var width = 0
    var height = 0
    var components = 0
    var pixels: UnsafeMutablePointer<UInt8>? = nil
    var rows: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>? = nil
}

private func decodeJob(of common: j_common_ptr?) -> UnsafeMutablePointer<JPEGDecodeJob>? {
    common?.pointee.client_data?.assumingMemoryBound(to: JPEGDecodeJob.self)
}

private func decodeJob(of decompressor: j_decompress_ptr?) -> UnsafeMutablePointer<JPEGDecodeJob>? {
    decompressor?.pointee.client_data?.assumingMemoryBound(to: JPEGDecodeJob.self)
}

/// Hands libjpeg a fake end-of-image marker once the data is used up, and remembers that it happened:
/// the reference reader calls an image that ends before its last row truncated.
private func presentEndOfData(_ decompressor: j_decompress_ptr?) {
    guard let job = decodeJob(of: decompressor), let source = decompressor?.pointee.src else { return }
    job.pointee.ranOutOfData = true
    if !job.pointee.allRowsRead { job.pointee.ranOutOfDataBeforeLastRow = true }
    source.pointee.next_input_byte = UnsafePointer(job.pointee.endOfImageMarker)
    source.pointee.bytes_in_buffer = 2
}

private func installHandlers(_ job: UnsafeMutablePointer<JPEGDecodeJob>) {
    let errorManager = job.pointee.errorManager
    _ = jpeg_std_error(errorManager)
    errorManager.pointee.error_exit = { common in
        if let job = decodeJob(of: common), let common {
            common.pointee.err.pointee.format_message(common, job.pointee.message)
            job.pointee.libraryFailed = true
        }
        GuardedThread.abandon()
    }
    // Warnings (corrupt entropy data, extraneous bytes) are ignored, as the reference reader does;
    // nothing is printed.
    errorManager.pointee.emit_message = { common, level in
        if level < 0, let manager = common?.pointee.err { manager.pointee.num_warnings += 1 }
    }
    errorManager.pointee.output_message = { _ in }

    let source = job.pointee.source
    source.pointee.next_input_byte = job.pointee.input
    source.pointee.bytes_in_buffer = job.pointee.inputCount
    source.pointee.init_source = { _ in }
    source.pointee.fill_input_buffer = { decompressor in
        presentEndOfData(decompressor)
        return 1
    }
    source.pointee.skip_input_data = { decompressor, count in
        guard count > 0, let source = decompressor?.pointee.src else { return }
        if count > source.pointee.bytes_in_buffer {
            presentEndOfData(decompressor)
        } else {
            source.pointee.next_input_byte = source.pointee.next_input_byte.advanced(by: count)
            source.pointee.bytes_in_buffer -= count
        }
    }
    source.pointee.resync_to_restart = jpeg_resync_to_restart
    source.pointee.term_source = { _ in }

    // A progressive file can hold thousands of tiny scans that each cost a pass over the whole image;
    // libjpeg reports progress once per unit of input, which is where such a file is stopped.
    job.pointee.progress.pointee.progress_monitor = { common in
        guard let job = decodeJob(of: common) else { return }
        if Int(job.pointee.decompressor.pointee.input_scan_number) > job.pointee.maxScans {
            job.pointee.outcome = .tooManyScans
            GuardedThread.abandon()
        }
    }
}

private func decodeJPEGOnCurrentThread(_ job: UnsafeMutablePointer<JPEGDecodeJob>) {
    let decompressor = job.pointee.decompressor
    installHandlers(job)
    decompressor.pointee.err = job.pointee.errorManager
    decompressor.pointee.client_data = UnsafeMutableRawPointer(job)
    jpeg_CreateDecompress(decompressor, JPEG_LIB_VERSION, MemoryLayout<jpeg_decompress_struct>.size)
    decompressor.pointee.src = job.pointee.source
    decompressor.pointee.progress = job.pointee.progress
    _ = jpeg_read_header(decompressor, 1)

    let width = Int(decompressor.pointee.image_width)
    let height = Int(decompressor.pointee.image_height)
    let components = Int(decompressor.pointee.num_components)
    guard decompressor.pointee.data_precision == 8 else {
        job.pointee.outcome = .unsupportedPrecision
        return
    }
    switch components {
    case 1: decompressor.pointee.out_color_space = JCS_GRAYSCALE
    case 3: decompressor.pointee.out_color_space = JCS_RGB
    case 4: decompressor.pointee.out_color_space = JCS_CMYK
    default:
        job.pointee.outcome = .unsupportedColorComponents
        return
    }
    job.pointee.width = width
    job.pointee.height = height
    job.pointee.components = components
    guard width.multipliedReportingOverflow(by: height).partialValue <= job.pointee.maxPixels else {
        job.pointee.outcome = .tooManyPixels
        return
    }

    // Progressive and multi-scan files buffer every coefficient of the image, zeroed up front: a header
    // claiming 8000x8000 over a few kilobytes of data would cost hundreds of megabytes before the data
    // runs out. Real images carry at least a byte per ~1000 pixels, so libjpeg may use 1 KiB per input
    // byte (never less than 256 MiB); beyond that it stops with JERR_NO_BACKING_STORE.
    decompressor.pointee.mem.pointee.max_memory_to_use = max(jpegMinimumMemory, min(job.pointee.inputCount, Int.max >> 10) << 10)
    _ = jpeg_start_decompress(decompressor)
    // A progressive file was read whole by now; one that ran out is truncated, and no row is worth decoding.
    if job.pointee.ranOutOfDataBeforeLastRow {
        job.pointee.outcome = .truncated
        return
    }
    guard Int(decompressor.pointee.output_width) == width, Int(decompressor.pointee.output_height) == height,
          Int(decompressor.pointee.output_components) == components
    else {
        job.pointee.outcome = .unexpectedOutputSize
        return
    }
    let rowBytes = width * components
    guard let pixels = malloc(rowBytes * height)?.assumingMemoryBound(to: UInt8.self) else {
        job.pointee.outcome = .outOfMemory
        return
    }
    job.pointee.pixels = pixels
    guard let rows = malloc(height * MemoryLayout<UnsafeMutablePointer<UInt8>?>.stride)?
        .assumingMemoryBound(to: UnsafeMutablePointer<UInt8>?.self)
    else {
        job.pointee.outcome = .outOfMemory
        return
    }
    job.pointee.rows = rows
    for row in 0..<height { rows[row] = pixels + row * rowBytes }

    while decompressor.pointee.output_scanline < decompressor.pointee.output_height {
        let next = Int(decompressor.pointee.output_scanline)
        let read = jpeg_read_scanlines(decompressor, rows + next, JDIMENSION(height - next))
        if read == 0 { break }
        // The rest would be filler the reference refuses anyway (truncated): stop before touching those rows.
        if job.pointee.ranOutOfDataBeforeLastRow {
            job.pointee.outcome = .truncated
            return
        }
    }
    job.pointee.allRowsRead = decompressor.pointee.output_scanline == decompressor.pointee.output_height
    _ = jpeg_finish_decompress(decompressor)
    job.pointee.outcome = .decoded
}

private let jpegThreadBody: GuardedThreadBody = { argument in
    decodeJPEGOnCurrentThread(argument.assumingMemoryBound(to: JPEGDecodeJob.self))
}

// MARK: - Public entry (calling thread)

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

    let decompressor = UnsafeMutablePointer<jpeg_decompress_struct>.allocate(capacity: 1)
    decompressor.initialize(to: jpeg_decompress_struct())
    let errorManager = UnsafeMutablePointer<jpeg_error_mgr>.allocate(capacity: 1)
    errorManager.initialize(to: jpeg_error_mgr())
    let source = UnsafeMutablePointer<jpeg_source_mgr>.allocate(capacity: 1)
    source.initialize(to: jpeg_source_mgr())
    let progress = UnsafeMutablePointer<jpeg_progress_mgr>.allocate(capacity: 1)
    progress.initialize(to: jpeg_progress_mgr())
    let endOfImageMarker = UnsafeMutablePointer<UInt8>.allocate(capacity: 2)
    endOfImageMarker[0] = 0xFF
    endOfImageMarker[1] = 0xD9
    let message = UnsafeMutablePointer<CChar>.allocate(capacity: Int(JMSG_LENGTH_MAX) + 1)
    message.initialize(repeating: 0, count: Int(JMSG_LENGTH_MAX) + 1)
    let job = UnsafeMutablePointer<JPEGDecodeJob>.allocate(capacity: 1)
    job.initialize(to: JPEGDecodeJob(
        input: input, inputCount: bytes.count, maxPixels: options.maxPixels, maxScans: options.maxJPEGScans,
        decompressor: decompressor, errorManager: errorManager, source: source, progress: progress,
        endOfImageMarker: endOfImageMarker, message: message))
    defer {
        // Safe whether the thread finished, gave up, or never started: libjpeg owns its memory.
        jpeg_destroy_decompress(decompressor)
        free(job.pointee.pixels)
        free(job.pointee.rows)
        job.deinitialize(count: 1); job.deallocate()
        decompressor.deallocate()
        errorManager.deallocate()
        source.deallocate()
        progress.deallocate()
        endOfImageMarker.deallocate()
        message.deallocate()
    }

    if let failure = GuardedThread.run(jpegThreadBody, argument: UnsafeMutableRawPointer(job)) {
        throw ImageError.decoderUnavailable(name: name, reason: failure)
    }
    let result = job.pointee
    if result.libraryFailed {
        if errorManager.pointee.msg_code == Int32(JERR_NO_BACKING_STORE.rawValue) {
            throw ImageError.corrupt(name: name, reason: "the header declares \(result.width)x\(result.height) pixels, more than \(bytes.count) bytes of progressive JPEG data can describe")
        }
        if result.ranOutOfData { throw ImageError.truncated(name: name) }
        throw ImageError.corrupt(name: name, reason: "libjpeg: " + String(cString: message))
    }
    switch result.outcome {
    case .notFinished:
        throw ImageError.corrupt(name: name, reason: "libjpeg stopped without saying why")
    case .truncated:
        throw ImageError.truncated(name: name)
    case .unsupportedPrecision:
        throw ImageError.unsupportedImage(name: name, reason: "JPEG samples are not 8-bit")
    case .unsupportedColorComponents:
        throw ImageError.unsupportedImage(name: name, reason: "JPEG with \(result.components) color components")
    case .unexpectedOutputSize:
        throw ImageError.corrupt(name: name, reason: "libjpeg would output a different size than the frame header declares")
    case .tooManyScans:
        throw ImageError.unsupportedImage(name: name, reason: "a progressive JPEG with more than \(options.maxJPEGScans) scans")
    case .tooManyPixels:
        throw ImageError.tooManyPixels(name: name, width: result.width, height: result.height, limit: options.maxPixels)
    case .outOfMemory:
        throw ImageError.decoderUnavailable(name: name, reason: "out of memory for \(result.width)x\(result.height) pixels")
    case .decoded:
        break
    }
    if result.ranOutOfDataBeforeLastRow { throw ImageError.truncated(name: name) }
    guard let pixels = result.pixels, result.width > 0, result.height > 0 else {
        throw ImageError.corrupt(name: name, reason: "no pixels decoded")
    }
    let samples = UnsafeBufferPointer(start: pixels, count: result.width * result.height * result.components)
    return jpegSamplesToRGB(samples, width: result.width, height: result.height, components: result.components)
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
