import Blip2Core
import CImageDecode
import Foundation

/// Limits applied while decoding untrusted images.
public struct ImageDecodeOptions: Sendable, Equatable {
    /// Images whose header declares more pixels than this are refused before any pixel is decoded.
    /// The default, 64 megapixels, admits any camera photo while bounding memory. At the limit the RGB
    /// result is 192 MB, and the decoder's samples are held beside it until converted: up to 512 MB more
    /// for a 16-bit RGBA PNG, 256 MB for a CMYK JPEG, so about 0.7 GB at the peak; a progressive JPEG adds
    /// libjpeg's coefficient buffers, capped separately (see `max_memory_to_use` in Sources/CImageDecode/jpeg_decode.c).
    public var maxPixels: Int = 64_000_000
    /// Files larger than this are refused before they are read.
    public var maxFileBytes: Int = 256 << 20
    /// Progressive JPEGs with more scans than this are refused: ordinary encoders write about 10, and each
    /// scan can cost a pass over the whole image, so thousands of tiny scans would stall a small board.
    public var maxJPEGScans: Int = 1000

    public init(maxPixels: Int = 64_000_000, maxFileBytes: Int = 256 << 20, maxJPEGScans: Int = 1000) {
        self.maxPixels = maxPixels
        self.maxFileBytes = maxFileBytes
        self.maxJPEGScans = maxJPEGScans
    }
}

/// The image formats recognized from their leading bytes.
public enum ImageFormat: String, Sendable, Equatable {
    case jpeg = "JPEG"
    case png = "PNG"
    case gif = "GIF"
    case bmp = "BMP"
    case webp = "WebP"
    case tiff = "TIFF"
    case heif = "HEIF/AVIF"
    case jpeg2000 = "JPEG 2000"
    case jpegXL = "JPEG XL"
    case qoi = "QOI"
    case ico = "ICO"

    /// Recognizes a format from the first bytes of a file (the extension is never consulted).
    public static func sniff(_ bytes: UnsafeRawBufferPointer) -> ImageFormat? {
        func starts(with prefix: [UInt8], at offset: Int = 0) -> Bool {
            guard bytes.count >= offset + prefix.count else { return false }
            for (index, byte) in prefix.enumerated() where bytes[offset + index] != byte { return false }
            return true
        }
        // SOI then a marker; a file that ends right after SOI is a truncated JPEG, not an unknown format.
        if starts(with: [0xFF, 0xD8, 0xFF]) || (bytes.count <= 3 && starts(with: [0xFF, 0xD8])) { return .jpeg }
        if starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
        if starts(with: Array("GIF87a".utf8)) || starts(with: Array("GIF89a".utf8)) { return .gif }
        if starts(with: Array("RIFF".utf8)) && starts(with: Array("WEBP".utf8), at: 8) { return .webp }
        if starts(with: [0x49, 0x49, 0x2A, 0x00]) || starts(with: [0x4D, 0x4D, 0x00, 0x2A]) { return .tiff }
        if starts(with: Array("ftyp".utf8), at: 4) { return .heif }
        if starts(with: [0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50, 0x20, 0x20]) || starts(with: [0xFF, 0x4F, 0xFF, 0x51]) {
            return .jpeg2000
        }
        if starts(with: [0xFF, 0x0A]) || starts(with: [0x00, 0x00, 0x00, 0x0C, 0x4A, 0x58, 0x4C, 0x20]) { return .jpegXL }
        if starts(with: Array("qoif".utf8)) { return .qoi }
        if starts(with: Array("BM".utf8)) && bytes.count >= 26 { return .bmp }
        if starts(with: [0x00, 0x00, 0x01, 0x00]) || starts(with: [0x00, 0x00, 0x02, 0x00]) { return .ico }
        return nil
    }
}

/// Reads JPEG and PNG images into RGB exactly as the reference `transformers` image processor sees them
/// (PIL's decoders, then its conversion to RGB with transparency composited onto white).
public enum ImageDecoder {
    /// Decodes the image file at `url`. Messages name the file as it was given (`url.relativePath`).
    public static func decode(contentsOf url: URL, options: ImageDecodeOptions = .init()) throws -> RGBImage {
        let path = url.path, name = url.relativePath
        // Read, not mapped: a mapping of a file that another process truncates would crash on access.
        let data: Data
        do {
            data = try RegularFile.contents(path, maxBytes: options.maxFileBytes)
        } catch let error as FileError {
            switch error.kind {
            case .missing: throw ImageError.fileNotFound(path: name)
            case .tooLarge(let bytes): throw ImageError.fileTooLarge(path: name, bytes: bytes, limit: options.maxFileBytes)
            case .notRegular, .failed: throw ImageError.unreadableFile(path: name, reason: error.message)
            }
        }
        return try decode(data: data, name: name, options: options)
    }

    /// Decodes image bytes already in memory; `name` identifies them in errors.
    public static func decode(data: Data, name: String, options: ImageDecodeOptions = .init()) throws -> RGBImage {
        guard !data.isEmpty else { throw ImageError.emptyFile(name: name) }
        guard data.count <= options.maxFileBytes else {
            throw ImageError.fileTooLarge(path: name, bytes: data.count, limit: options.maxFileBytes)
        }
        return try data.withUnsafeBytes { bytes in
            switch ImageFormat.sniff(bytes) {
            case .jpeg: return try decodeJPEG(bytes, name: name, options: options)
            case .png: return try decodePNG(bytes, name: name, options: options)
            case .some(let other): throw ImageError.unsupportedFormat(name: name, format: other.rawValue)
            case .none: throw ImageError.unrecognizedFormat(name: name)
            }
        }
    }
}

func checkPixelLimit(width: Int, height: Int, name: String, options: ImageDecodeOptions) throws {
    let (pixels, overflow) = width.multipliedReportingOverflow(by: height)
    if overflow || pixels > options.maxPixels {
        throw ImageError.tooManyPixels(name: name, width: width, height: height, limit: options.maxPixels)
    }
}

/// The library's own words for a failed decode (`blip2_decode_result.message`, NUL-terminated by the shim).
func decodeMessage(_ result: blip2_decode_result) -> String {
    withUnsafeBytes(of: result.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
}
