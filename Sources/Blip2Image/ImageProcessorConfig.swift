import Blip2Core
import Foundation

/// The image preprocessing settings of a checkpoint's `preprocessor_config.json`, with the reference
/// `BlipImageProcessor`'s defaults for absent keys (note those defaults say 384x384; BLIP-2 checkpoints
/// set 224x224). Unknown keys are ignored.
public struct ImageProcessorConfig: Codable, Sendable, Equatable {
    /// How the output size is chosen, in the forms the reference accepts for `size`.
    public enum Size: Sendable, Equatable {
        /// Exactly this size, ignoring aspect ratio (`{"height": h, "width": w}`, an integer, or `[h, w]`).
        case exact(height: Int, width: Int)
        /// Keep aspect ratio; the shorter edge becomes this (`{"shortest_edge": s}`).
        case shortestEdge(Int)
        /// Keep aspect ratio; shorter edge `shortest` unless the longer would exceed `longest`.
        case shortestAndLongestEdge(shortest: Int, longest: Int)
        /// Keep aspect ratio; scale so the image just fits in the box.
        case maxHeightWidth(maxHeight: Int, maxWidth: Int)
    }

    public static let openAICLIPMean: [Double] = [0.48145466, 0.4578275, 0.40821073]
    public static let openAICLIPStandardDeviation: [Double] = [0.26862954, 0.26130258, 0.27577711]

    public var size: Size = .exact(height: 384, width: 384)
    public var resample: ResampleFilter = .bicubic
    public var doResize = true
    public var doRescale = true
    public var rescaleFactor = 1.0 / 255.0
    public var doNormalize = true
    public var imageMean: [Double] = ImageProcessorConfig.openAICLIPMean
    public var imageStd: [Double] = ImageProcessorConfig.openAICLIPStandardDeviation
    public var doConvertRGB = true
    /// Read so a configuration that asks for it is refused instead of silently processed differently.
    public var doCenterCrop = false

    /// `BlipImageProcessor`'s defaults.
    public init() {}

    /// The settings of `Salesforce/blip2-opt-2.7b`: 224x224, bicubic, x/255, OpenAI CLIP mean and std.
    public static var blip2: ImageProcessorConfig {
        var config = ImageProcessorConfig()
        config.size = .exact(height: 224, width: 224)
        return config
    }

    /// Reads a `preprocessor_config.json`.
    public static func load(contentsOf url: URL) throws -> ImageProcessorConfig {
        let data: Data
        do {
            data = try RegularFile.contents(url.path, maxBytes: 16 << 20)
        } catch let error as FileError {
            if error.kind == .missing { throw ImageError.fileNotFound(path: url.path) }
            throw ImageError.unreadableFile(path: url.path, reason: error.message)
        }
        return try decode(data, name: url.path)
    }

    /// Parses the JSON text of a `preprocessor_config.json`; `name` identifies it in errors.
    public static func decode(_ json: Data, name: String = "preprocessor_config.json") throws -> ImageProcessorConfig {
        do {
            return try JSONDecoder().decode(ImageProcessorConfig.self, from: json)
        } catch let error as ImageError {
            throw error
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context),
                let DecodingError.dataCorrupted(context), let DecodingError.keyNotFound(_, context) {
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw ImageError.invalidConfig(name: name, reason: (path.isEmpty ? "" : "\(path): ") + context.debugDescription)
        } catch {
            throw ImageError.invalidConfig(name: name, reason: "\(error)")
        }
    }

    enum CodingKeys: String, CodingKey {
        case size
        case resample
        case doResize = "do_resize"
        case doRescale = "do_rescale"
        case rescaleFactor = "rescale_factor"
        case doNormalize = "do_normalize"
        case imageMean = "image_mean"
        case imageStd = "image_std"
        case doConvertRGB = "do_convert_rgb"
        case doCenterCrop = "do_center_crop"
    }

    private enum SizeKeys: String, CodingKey {
        case height, width
        case shortestEdge = "shortest_edge"
        case longestEdge = "longest_edge"
        case maxHeight = "max_height"
        case maxWidth = "max_width"
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        if container.contains(.size), try !container.decodeNil(forKey: .size) {
            size = try Self.decodeSize(container)
        }
        if let value = try container.decodeIfPresent(Int.self, forKey: .resample) {
            guard let filter = ResampleFilter(rawValue: value) else {
                throw DecodingError.dataCorruptedError(forKey: .resample, in: container,
                                                       debugDescription: "unknown resampling filter \(value)")
            }
            resample = filter
        }
        doResize = try container.decodeIfPresent(Bool.self, forKey: .doResize) ?? doResize
        doRescale = try container.decodeIfPresent(Bool.self, forKey: .doRescale) ?? doRescale
        rescaleFactor = try container.decodeIfPresent(Double.self, forKey: .rescaleFactor) ?? rescaleFactor
        doNormalize = try container.decodeIfPresent(Bool.self, forKey: .doNormalize) ?? doNormalize
        imageMean = try Self.decodeChannels(container, .imageMean) ?? imageMean
        imageStd = try Self.decodeChannels(container, .imageStd) ?? imageStd
        doConvertRGB = try container.decodeIfPresent(Bool.self, forKey: .doConvertRGB) ?? doConvertRGB
        doCenterCrop = try container.decodeIfPresent(Bool.self, forKey: .doCenterCrop) ?? doCenterCrop
    }

    /// A single number applies to every channel, as in the reference.
    private static func decodeChannels(_ container: KeyedDecodingContainer<CodingKeys>, _ key: CodingKeys) throws -> [Double]? {
        guard container.contains(key), try !container.decodeNil(forKey: key) else { return nil }
        if let single = try? container.decode(Double.self, forKey: key) { return [single, single, single] }
        return try container.decode([Double].self, forKey: key)
    }

    private static func decodeSize(_ container: KeyedDecodingContainer<CodingKeys>) throws -> Size {
        if let square = try? container.decode(Int.self, forKey: .size) {
            return .exact(height: square, width: square)
        }
        if let pair = try? container.decode([Int].self, forKey: .size) {
            switch pair.count {
            case 2: return .exact(height: pair[0], width: pair[1])
            case 1: return .exact(height: pair[0], width: pair[0])
            default:
                throw DecodingError.dataCorruptedError(forKey: .size, in: container,
                                                       debugDescription: "a size list needs 1 or 2 numbers")
            }
        }
        let keyed = try container.nestedContainer(keyedBy: SizeKeys.self, forKey: .size)
        let height = try keyed.decodeIfPresent(Int.self, forKey: .height)
        let width = try keyed.decodeIfPresent(Int.self, forKey: .width)
        let shortest = try keyed.decodeIfPresent(Int.self, forKey: .shortestEdge)
        let longest = try keyed.decodeIfPresent(Int.self, forKey: .longestEdge)
        let maxHeight = try keyed.decodeIfPresent(Int.self, forKey: .maxHeight)
        let maxWidth = try keyed.decodeIfPresent(Int.self, forKey: .maxWidth)
        // Same precedence as the reference resize.
        if let shortest, let longest { return .shortestAndLongestEdge(shortest: shortest, longest: longest) }
        if let shortest { return .shortestEdge(shortest) }
        if let maxHeight, let maxWidth { return .maxHeightWidth(maxHeight: maxHeight, maxWidth: maxWidth) }
        if let height, let width { return .exact(height: height, width: width) }
        throw DecodingError.dataCorruptedError(
            forKey: .size, in: container,
            debugDescription: "size needs height and width, shortest_edge, or max_height and max_width")
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        var sizeContainer = container.nestedContainer(keyedBy: SizeKeys.self, forKey: .size)
        switch size {
        case .exact(let height, let width):
            try sizeContainer.encode(height, forKey: .height)
            try sizeContainer.encode(width, forKey: .width)
        case .shortestEdge(let shortest):
            try sizeContainer.encode(shortest, forKey: .shortestEdge)
        case .shortestAndLongestEdge(let shortest, let longest):
            try sizeContainer.encode(shortest, forKey: .shortestEdge)
            try sizeContainer.encode(longest, forKey: .longestEdge)
        case .maxHeightWidth(let maxHeight, let maxWidth):
            try sizeContainer.encode(maxHeight, forKey: .maxHeight)
            try sizeContainer.encode(maxWidth, forKey: .maxWidth)
        }
        try container.encode(resample.rawValue, forKey: .resample)
        try container.encode(doResize, forKey: .doResize)
        try container.encode(doRescale, forKey: .doRescale)
        try container.encode(rescaleFactor, forKey: .rescaleFactor)
        try container.encode(doNormalize, forKey: .doNormalize)
        try container.encode(imageMean, forKey: .imageMean)
        try container.encode(imageStd, forKey: .imageStd)
        try container.encode(doConvertRGB, forKey: .doConvertRGB)
        try container.encode(doCenterCrop, forKey: .doCenterCrop)
    }
}

extension ImageProcessorConfig.Size {
    /// The output size for an input of `width` x `height`, computed as the reference does
    /// (Python float arithmetic, truncation toward zero, banker's rounding where it rounds).
    public func outputSize(inputWidth width: Int, inputHeight height: Int) -> (width: Int, height: Int) {
        switch self {
        case .exact(let outputHeight, let outputWidth):
            return (outputWidth, outputHeight)
        case .shortestEdge(let shortest):
            let (short, long) = width <= height ? (width, height) : (height, width)
            let newLong = truncatedSize(product(shortest, long) / Double(short))
            return width <= height ? (shortest, newLong) : (newLong, shortest)
        case .shortestAndLongestEdge(let shortest, let longest):
            var size = shortest
            var rawSize: Double?
            let minimum = Double(min(height, width)), maximum = Double(max(height, width))
            if maximum / minimum * Double(size) > Double(longest) {
                let raw = Double(longest) * minimum / maximum
                rawSize = raw
                size = truncatedSize(raw.rounded(.toNearestOrEven))
            }
            if (height <= width && height == size) || (width <= height && width == size) {
                return (width, height)
            }
            if width < height {
                let newHeight = truncatedSize((rawSize.map { $0 * Double(height) } ?? product(size, height)) / Double(width))
                return (size, newHeight)
            }
            let newWidth = truncatedSize((rawSize.map { $0 * Double(width) } ?? product(size, width)) / Double(height))
            return (newWidth, size)
        case .maxHeightWidth(let maxHeight, let maxWidth):
            let scale = min(Double(maxHeight) / Double(height), Double(maxWidth) / Double(width))
            return (truncatedSize(Double(width) * scale), truncatedSize(Double(height) * scale))
        }
    }
}

/// `a * b` as the reference's unbounded integers give it, rounded to a Double only when it overflows an Int.
private func product(_ a: Int, _ b: Int) -> Double {
    let (exact, overflow) = a.multipliedReportingOverflow(by: b)
    return overflow ? Double(a) * Double(b) : Double(exact)
}

/// Python's `int(x)`, saturating where `Int(x)` would trap (NaN from an empty input, or beyond ±2^62):
/// `ImagePreprocessor` bounds the configured sizes, but this is public and inputs are anyone's.
private func truncatedSize(_ value: Double) -> Int {
    guard !value.isNaN else { return 0 }
    return Int(min(max(value, -0x1p62), 0x1p62))
}
