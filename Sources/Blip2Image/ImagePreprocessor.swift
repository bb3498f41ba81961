import Foundation

/// Turns decoded images into the model's `pixel_values`, exactly as the reference `BlipImageProcessor`
/// (PIL backend) does: resize (uint8, aspect ratio ignored for an exact size), then x * rescale_factor in
/// double precision rounded to float, then (x - mean) / std in float, laid out channel-first [3, H, W].
public struct ImagePreprocessor: Sendable {
    public let config: ImageProcessorConfig
    /// Output height when the configured size is exact (BLIP-2: 224). With an aspect-preserving size the
    /// output depends on the input: this is then the height a square input gets; use `outputSize(for:)`.
    public let outputHeight: Int
    /// Output width; see `outputHeight`.
    public let outputWidth: Int
    /// The float each uint8 value becomes, per channel: [channel * 256 + value]. Every value goes through
    /// the same arithmetic, so a table is exact and keeps the per-pixel work to one load.
    private let channelTables: [Float]

    /// Checks the configuration and precomputes what does not depend on the image.
    public init(config: ImageProcessorConfig) throws {
        let name = "image preprocessing configuration"
        if config.doCenterCrop {
            throw ImageError.invalidConfig(name: name, reason: "do_center_crop is not part of BLIP-2's preprocessing and is not supported")
        }
        if config.resample == .nearest {
            throw ImageError.invalidConfig(name: name, reason: "resample 0 (nearest) is not supported; BLIP-2 uses 3 (bicubic)")
        }
        // Every edge is bounded before anything is computed from it, so no size arithmetic can overflow.
        let edges: [(String, Int)]
        switch config.size {
        case .exact(let height, let width): edges = [("size.height", height), ("size.width", width)]
        case .shortestEdge(let shortest): edges = [("size.shortest_edge", shortest)]
        case .shortestAndLongestEdge(let shortest, let longest):
            edges = [("size.shortest_edge", shortest), ("size.longest_edge", longest)]
        case .maxHeightWidth(let maxHeight, let maxWidth): edges = [("size.max_height", maxHeight), ("size.max_width", maxWidth)]
        }
        for (field, value) in edges where !(1...Self.maxEdge).contains(value) {
            throw ImageError.invalidConfig(name: name, reason: "\(field) is \(value), outside 1...\(Self.maxEdge)")
        }
        if config.doNormalize {
            guard config.imageMean.count == 3, config.imageStd.count == 3 else {
                throw ImageError.invalidConfig(name: name, reason: "image_mean and image_std need 3 values (one per RGB channel)")
            }
            guard config.imageStd.allSatisfy({ $0 != 0 && $0.isFinite }), config.imageMean.allSatisfy(\.isFinite) else {
                throw ImageError.invalidConfig(name: name, reason: "image_std must be finite and non-zero, image_mean finite")
            }
        }
        guard config.rescaleFactor.isFinite else { throw ImageError.invalidConfig(name: name, reason: "rescale_factor must be finite") }

        self.config = config
        let square = config.size.outputSize(inputWidth: 1000, inputHeight: 1000)
        switch config.size {
        case .exact(let height, let width):
            outputHeight = height
            outputWidth = width
        default:
            outputHeight = square.height
            outputWidth = square.width
        }
        var tables = [Float](repeating: 0, count: 3 * 256)
        for channel in 0..<3 {
            // Same dtypes as the reference: rescale in float64 then cast to float32; normalize in float32.
            let mean = Float(config.doNormalize ? config.imageMean[channel] : 0)
            let std = Float(config.doNormalize ? config.imageStd[channel] : 1)
            for value in 0..<256 {
                var x = config.doRescale ? Float(Double(value) * config.rescaleFactor) : Float(value)
                if config.doNormalize { x = (x - mean) / std }
                tables[channel * 256 + value] = x
            }
        }
        // Checked in the arithmetic the model sees: a std of 1e-300 is non-zero as a Double but 0 as a Float.
        guard tables.allSatisfy({ $0.isFinite && abs($0) <= Self.maxPixelValue }) else {
            throw ImageError.invalidConfig(name: name, reason: "rescale_factor, image_mean and image_std give pixel values beyond ±\(Int(Self.maxPixelValue)) (real configs give about ±3, or 0 to 255 unnormalized)")
        }
        channelTables = tables
    }

    /// Largest value of any `size` field (pixels): four times the largest vision `image_size` a model
    /// config may declare (2^14), and small enough that no product of two edges comes near overflow.
    public static let maxEdge = 1 << 16

    /// Largest magnitude a preprocessed pixel may have.
    public static let maxPixelValue: Float = 10_000

    /// Decodes a `preprocessor_config.json` (`name` identifies it in errors) and checks it can feed a
    /// vision model that takes `side` x `side` images. The converter and the runtime both go through here.
    public static func checked(json: Data, name: String, side: Int) throws -> ImagePreprocessor {
        let config = try ImageProcessorConfig.decode(json, name: name)
        let preprocessor: ImagePreprocessor
        do { preprocessor = try ImagePreprocessor(config: config) } catch ImageError.invalidConfig(_, let reason) {
            throw ImageError.invalidConfig(name: name, reason: reason)
        }
        try preprocessor.checkFixedOutput(side: side, name: name)
        return preprocessor
    }

    /// Refuses a configuration that cannot feed a model taking `side` x `side` images: every input, whatever
    /// its size, must come out exactly that size, so resizing must be on and to an exact size.
    public func checkFixedOutput(side: Int, name: String) throws {
        guard config.doResize else {
            throw ImageError.invalidConfig(name: name, reason: "do_resize is false, but the vision model takes exactly \(side)x\(side) images")
        }
        guard case .exact(let height, let width) = config.size, height == side, width == side else {
            throw ImageError.invalidConfig(name: name, reason: "size resizes to \(outputWidth)x\(outputHeight)\(isExact ? "" : " (for a square input)"), but the vision model takes exactly \(side)x\(side)")
        }
    }

    private var isExact: Bool {
        if case .exact = config.size { return true }
        return false
    }

    /// The resized size for an input of `width` x `height` (the input size itself when `do_resize` is off).
    public func outputSize(inputWidth width: Int, inputHeight height: Int) -> (width: Int, height: Int) {
        guard config.doResize else { return (width, height) }
        let size = config.size.outputSize(inputWidth: width, inputHeight: height)
        // The reference fails on an empty output; a 1-pixel edge is the closest usable answer.
        return (max(size.width, 1), max(size.height, 1))
    }

    /// A resampler for inputs of this size, to reuse across images of the same size (a camera feed).
    public func makeResampler(inputWidth: Int, inputHeight: Int) -> ImageResampler {
        let size = outputSize(inputWidth: inputWidth, inputHeight: inputHeight)
        return ImageResampler(inputWidth: inputWidth, inputHeight: inputHeight, outputWidth: size.width,
                              outputHeight: size.height, filter: config.resample)
    }

    /// The uint8 image the reference hands to rescaling: `image` resized when `do_resize` is on.
    public func resized(_ image: RGBImage, using resampler: ImageResampler? = nil) -> RGBImage {
        guard config.doResize else { return image }
        let resampler = resampler ?? makeResampler(inputWidth: image.width, inputHeight: image.height)
        return resampler.resize(image)
    }

    /// The model input for `image`: [3, H, W] floats, channel-first.
    public func pixelValues(for image: RGBImage) -> [Float] {
        pixelValues(for: image, using: nil)
    }

    /// As `pixelValues(for:)`, with a resampler made by `makeResampler` for this input size.
    public func pixelValues(for image: RGBImage, using resampler: ImageResampler?) -> [Float] {
        let resizedImage = resized(image, using: resampler)
        let planeSize = resizedImage.width * resizedImage.height
        return [Float](unsafeUninitializedCapacity: 3 * planeSize) { output, initialized in
            writePixelValues(of: resizedImage, into: output)
            initialized = 3 * planeSize
        }
    }

    /// Writes the [3, H, W] values of an already resized image into `output` (at least 3 * H * W floats),
    /// for callers that keep one input buffer per model.
    public func writePixelValues(of resizedImage: RGBImage, into output: UnsafeMutableBufferPointer<Float>) {
        let planeSize = resizedImage.width * resizedImage.height
        precondition(output.count >= 3 * planeSize, "output buffer holds \(output.count) floats, need \(3 * planeSize)")
        precondition(resizedImage.pixels.count == 3 * planeSize, "pixel buffer does not match the image size")
        channelTables.withUnsafeBufferPointer { tables in
            resizedImage.pixels.withUnsafeBufferPointer { pixels in
                for channel in 0..<3 {
                    let table = UnsafeBufferPointer(rebasing: tables[channel * 256..<(channel + 1) * 256])
                    let plane = channel * planeSize
                    for index in 0..<planeSize {
                        output[plane + index] = table[Int(pixels[3 * index + channel])]
                    }
                }
            }
        }
    }
}
