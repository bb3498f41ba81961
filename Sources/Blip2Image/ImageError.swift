/// Everything that can go wrong while reading an image or a preprocessing configuration.
/// Each case names the file (or the name the caller gave the bytes) so a message on its own is enough.
public enum ImageError: Error, CustomStringConvertible, Equatable, Sendable {
    /// No file at the path.
    case fileNotFound(path: String)
    /// The path exists but could not be read (a directory, no permission, an I/O error).
    case unreadableFile(path: String, reason: String)
    /// Over `ImageDecodeOptions.maxFileBytes`; nothing was read.
    case fileTooLarge(path: String, bytes: Int, limit: Int)
    /// Zero bytes.
    case emptyFile(name: String)
    /// The leading bytes match no image format at all: not an image, or damaged from the first byte.
    case unrecognizedFormat(name: String)
    /// A known image format that this decoder does not read (GIF, WebP, ...).
    case unsupportedFormat(name: String, format: String)
    /// A JPEG or PNG using a feature this decoder (like the reference one) does not handle,
    /// such as 12-bit JPEG samples or a 2-component JPEG.
    case unsupportedImage(name: String, reason: String)
    /// The header declares more pixels than `ImageDecodeOptions.maxPixels`; nothing was decoded.
    case tooManyPixels(name: String, width: Int, height: Int, limit: Int)
    /// The data ends before the image does.
    case truncated(name: String)
    /// The data is not a valid image of its format.
    case corrupt(name: String, reason: String)
    /// The decoder could not get the memory it needs.
    case decoderUnavailable(name: String, reason: String)
    /// A preprocessing configuration that cannot be used.
    case invalidConfig(name: String, reason: String)

    public var description: String {
        switch self {
        case .fileNotFound(let path):
            return "\(path): no such file; check the path"
        case .unreadableFile(let path, let reason):
            return "\(path): cannot read the file (\(reason))"
        case .fileTooLarge(let path, let bytes, let limit):
            return "\(path): the file has \(bytes) bytes, over the limit of \(limit); raise ImageDecodeOptions.maxFileBytes to read it"
        case .emptyFile(let name):
            return "\(name): the file is empty; expected a JPEG or PNG image"
        case .unrecognizedFormat(let name):
            return "\(name): not a JPEG or PNG image (unrecognized leading bytes); the file may be damaged or of another kind"
        case .unsupportedFormat(let name, let format):
            return "\(name): \(format) images are not supported; convert it to JPEG or PNG"
        case .unsupportedImage(let name, let reason):
            return "\(name): unsupported image: \(reason); re-save it as an 8-bit JPEG or a PNG"
        case .tooManyPixels(let name, let width, let height, let limit):
            return "\(name): the image declares \(width)x\(height) = \(width * height) pixels, over the limit of \(limit); "
                + "shrink the image or raise ImageDecodeOptions.maxPixels"
        case .truncated(let name):
            return "\(name): the image data ends early (the file is truncated); copy or download it again"
        case .corrupt(let name, let reason):
            return "\(name): the image is corrupt (\(reason))"
        case .decoderUnavailable(let name, let reason):
            return "\(name): could not start decoding (\(reason))"
        case .invalidConfig(let name, let reason):
            return "\(name): invalid image preprocessing configuration: \(reason)"
        }
    }
}
