import Foundation

/// Resampling filters, numbered as the reference library numbers them in `preprocessor_config.json`.
public enum ResampleFilter: Int, Codable, Sendable, CaseIterable {
    case nearest = 0
    case lanczos = 1
    case bilinear = 2
    case bicubic = 3
    case box = 4
    case hamming = 5

    /// Half-width of the kernel at scale 1.
    var support: Double {
        switch self {
        case .nearest, .box: return 0.5
        case .bilinear, .hamming: return 1
        case .bicubic: return 2
        case .lanczos: return 3
        }
    }

    /// The kernel, in double precision with the reference's exact expressions (including its
    /// single-precision Hamming constants) so fixed-point weights round the same way.
    func weight(_ x: Double) -> Double {
        switch self {
        case .nearest, .box:
            return x > -0.5 && x <= 0.5 ? 1 : 0
        case .bilinear:
            let distance = abs(x)
            return distance < 1 ? 1 - distance : 0
        case .hamming:
            let distance = abs(x)
            if distance == 0 { return 1 }
            if distance >= 1 { return 0 }
            let angle = distance * Double.pi
            return sin(angle) / angle * (Double(Float(0.54)) + Double(Float(0.46)) * cos(angle))
        case .bicubic:
            // Keys' cubic convolution with a = -0.5.
            let a = -0.5
            let distance = abs(x)
            if distance < 1 { return ((a + 2.0) * distance - (a + 3.0)) * distance * distance + 1 }
            if distance < 2 { return (((distance - 5) * distance + 8) * distance - 4) * a }
            return 0
        case .lanczos:
            guard -3.0 <= x && x < 3.0 else { return 0 }
            return Self.sinc(x) * Self.sinc(x / 3)
        }
    }

    private static func sinc(_ x: Double) -> Double {
        if x == 0 { return 1 }
        let angle = x * Double.pi
        return sin(angle) / angle
    }
}

/// Fixed-point weights for resampling one axis, built once per (input size, output size, filter).
/// Output sample `i` is the rounded, clamped sum over `counts[i]` input samples from `starts[i]` of
/// input * `weights[i * taps + t]`, in units of 2^-22 (the reference's PRECISION_BITS).
struct ResampleAxis: Sendable {
    static let precisionBits: Int32 = 22

    let inputSize: Int
    let outputSize: Int
    let taps: Int
    let starts: [Int]
    let counts: [Int]
    let weights: [Int32]

    init(inputSize: Int, outputSize: Int, filter: ResampleFilter) {
        self.inputSize = inputSize
        self.outputSize = outputSize
        let scale = Double(inputSize) / Double(outputSize)
        // Shrinking widens the kernel by the scale factor, which is what makes the filter antialias.
        let filterScale = max(scale, 1.0)
        let support = filter.support * filterScale
        let taps = Int(support.rounded(.up)) * 2 + 1
        self.taps = taps
        var starts = [Int](repeating: 0, count: outputSize)
        var counts = [Int](repeating: 0, count: outputSize)
        var weights = [Int32](repeating: 0, count: outputSize * taps)
        var kernel = [Double](repeating: 0, count: taps)
        let inverseFilterScale = 1.0 / filterScale
        let one = Double(Int32(1) << Self.precisionBits)
        for output in 0..<outputSize {
            let center = (Double(output) + 0.5) * scale
            let first = max(Int(center - support + 0.5), 0)
            let end = min(Int(center + support + 0.5), inputSize)
            let count = max(end - first, 0)
            var total = 0.0
            for tap in 0..<count {
                let weight = filter.weight((Double(tap + first) - center + 0.5) * inverseFilterScale)
                kernel[tap] = weight
                total += weight
            }
            for tap in 0..<count {
                let normalized = total != 0 ? kernel[tap] / total : kernel[tap]
                weights[output * taps + tap] = normalized < 0
                    ? Int32(-0.5 + normalized * one)
                    : Int32(0.5 + normalized * one)
            }
            starts[output] = first
            counts[output] = count
        }
        self.starts = starts
        self.counts = counts
        self.weights = weights
    }
}

@inline(__always)
private func clampFixedPoint(_ sum: Int32) -> UInt8 {
    let value = sum >> ResampleAxis.precisionBits
    return value < 0 ? 0 : value > 255 ? 255 : UInt8(truncatingIfNeeded: value)
}

/// Resizes RGB images of one size to another exactly as the reference library's 8-bit resampler does.
/// Each pass accumulates in 22-bit fixed point and rounds and clamps to 0...255; a pass whose dimension
/// does not change is skipped. The horizontal pass normally runs first, over only the input rows the
/// vertical pass will read; since Pillow 13 the vertical pass runs first when the height shrinks by more
/// than twice as many pixels as the width does (`inH - outH > 2 * (inW - outW)`), and the pass order
/// changes the rounding, so it is reproduced too. Build one per input size and reuse it (e.g. for every
/// frame of a camera feed).
public struct ImageResampler: Sendable {
    public let inputWidth: Int
    public let inputHeight: Int
    public let outputWidth: Int
    public let outputHeight: Int
    public let filter: ResampleFilter
    private let horizontal: ResampleAxis?
    private let vertical: ResampleAxis?
    private let verticalFirst: Bool

    /// All sizes must be positive; `filter` must not be `.nearest` (a different algorithm in the reference).
    public init(inputWidth: Int, inputHeight: Int, outputWidth: Int, outputHeight: Int, filter: ResampleFilter = .bicubic) {
        precondition(inputWidth > 0 && inputHeight > 0 && outputWidth > 0 && outputHeight > 0, "sizes must be positive")
        precondition(filter != .nearest, "nearest-neighbour resizing is not implemented")
        self.inputWidth = inputWidth
        self.inputHeight = inputHeight
        self.outputWidth = outputWidth
        self.outputHeight = outputHeight
        self.filter = filter
        horizontal = outputWidth != inputWidth
            ? ResampleAxis(inputSize: inputWidth, outputSize: outputWidth, filter: filter) : nil
        vertical = outputHeight != inputHeight
            ? ResampleAxis(inputSize: inputHeight, outputSize: outputHeight, filter: filter) : nil
        let heightReduction = inputHeight - outputHeight
        verticalFirst = horizontal != nil && vertical != nil && heightReduction > 0
            && heightReduction > 2 * (inputWidth - outputWidth)
    }

    /// Resizes `image`, which must be `inputWidth` x `inputHeight`.
    public func resize(_ image: RGBImage) -> RGBImage {
        precondition(image.width == inputWidth && image.height == inputHeight,
                     "resampler built for \(inputWidth)x\(inputHeight), got \(image.width)x\(image.height)")
        precondition(image.pixels.count == inputWidth * inputHeight * 3, "pixel buffer does not match the image size")
        switch (horizontal, vertical) {
        case (nil, nil):
            return image
        case (let horizontal?, nil):
            return runHorizontal(horizontal, on: image.pixels, width: inputWidth, firstRow: 0, rows: inputHeight)
        case (nil, let vertical?):
            return runVertical(vertical, on: image.pixels, width: inputWidth, rowShift: 0)
        case (let horizontal?, let vertical?):
            if verticalFirst {
                let shortened = runVertical(vertical, on: image.pixels, width: inputWidth, rowShift: 0)
                return runHorizontal(horizontal, on: shortened.pixels, width: inputWidth, firstRow: 0, rows: outputHeight)
            }
            // Only the input rows the vertical pass reads.
            let firstRow = vertical.starts[0]
            let endRow = vertical.starts[outputHeight - 1] + vertical.counts[outputHeight - 1]
            let narrowed = runHorizontal(horizontal, on: image.pixels, width: inputWidth, firstRow: firstRow,
                                         rows: endRow - firstRow)
            return runVertical(vertical, on: narrowed.pixels, width: outputWidth, rowShift: firstRow)
        }
    }

    /// Resamples rows `firstRow..<firstRow + rows` of a `width`-pixel-wide image to `outputWidth` pixels.
    private func runHorizontal(_ axis: ResampleAxis, on input: [UInt8], width: Int, firstRow: Int, rows: Int) -> RGBImage {
        let pixels = [UInt8](unsafeUninitializedCapacity: rows * outputWidth * 3) { buffer, initialized in
            input.withUnsafeBufferPointer { input in
                horizontalPass(axis, input: input, inputWidth: width, firstRow: firstRow, rows: rows, output: buffer)
            }
            initialized = rows * outputWidth * 3
        }
        return RGBImage(width: outputWidth, height: rows, pixels: pixels)
    }

    /// Resamples the columns of a `width`-pixel-wide image to `outputHeight` rows; row `r` of `input` is
    /// input row `r + rowShift` as far as the axis weights are concerned.
    private func runVertical(_ axis: ResampleAxis, on input: [UInt8], width: Int, rowShift: Int) -> RGBImage {
        let pixels = [UInt8](unsafeUninitializedCapacity: outputHeight * width * 3) { buffer, initialized in
            input.withUnsafeBufferPointer { input in
                verticalPass(axis, input: input, rowLength: width * 3, rowShift: rowShift, output: buffer)
            }
            initialized = outputHeight * width * 3
        }
        return RGBImage(width: width, height: outputHeight, pixels: pixels)
    }

    private func horizontalPass(_ axis: ResampleAxis, input: UnsafeBufferPointer<UInt8>, inputWidth: Int, firstRow: Int,
                                rows: Int, output: UnsafeMutableBufferPointer<UInt8>) {
        guard let inputBase = input.baseAddress, let outputBase = output.baseAddress else { return }
        let half: Int32 = 1 << (ResampleAxis.precisionBits - 1)
        let taps = axis.taps
        let outputWidth = axis.outputSize
        axis.weights.withUnsafeBufferPointer { weights in
            axis.starts.withUnsafeBufferPointer { starts in
                axis.counts.withUnsafeBufferPointer { counts in
                    guard let weightBase = weights.baseAddress else { return }
                    for row in 0..<rows {
                        let sourceRow = inputBase + (row + firstRow) * inputWidth * 3
                        let targetRow = outputBase + row * outputWidth * 3
                        for x in 0..<outputWidth {
                            let kernel = weightBase + x * taps
                            var sample = sourceRow + starts[x] * 3
                            var red = half, green = half, blue = half
                            for tap in 0..<counts[x] {
                                let weight = kernel[tap]
                                red &+= Int32(sample[0]) &* weight
                                green &+= Int32(sample[1]) &* weight
                                blue &+= Int32(sample[2]) &* weight
                                sample += 3
                            }
                            targetRow[3 * x] = clampFixedPoint(red)
                            targetRow[3 * x + 1] = clampFixedPoint(green)
                            targetRow[3 * x + 2] = clampFixedPoint(blue)
                        }
                    }
                }
            }
        }
    }

    private func verticalPass(_ axis: ResampleAxis, input: UnsafeBufferPointer<UInt8>, rowLength: Int, rowShift: Int,
                              output: UnsafeMutableBufferPointer<UInt8>) {
        guard let inputBase = input.baseAddress, let outputBase = output.baseAddress else { return }
        let half: Int32 = 1 << (ResampleAxis.precisionBits - 1)
        // One row of sums, reused for every output row; integer sums do not depend on the order of terms.
        let sums = UnsafeMutablePointer<Int32>.allocate(capacity: rowLength)
        defer { sums.deallocate() }
        axis.weights.withUnsafeBufferPointer { weights in
            for y in 0..<axis.outputSize {
                sums.update(repeating: half, count: rowLength)
                let start = axis.starts[y] - rowShift
                for tap in 0..<axis.counts[y] {
                    let weight = weights[y * axis.taps + tap]
                    let sourceRow = inputBase + (start + tap) * rowLength
                    for i in 0..<rowLength { sums[i] &+= Int32(sourceRow[i]) &* weight }
                }
                let targetRow = outputBase + y * rowLength
                for i in 0..<rowLength { targetRow[i] = clampFixedPoint(sums[i]) }
            }
        }
    }
}

/// Resizes `image` to `width` x `height`, ignoring aspect ratio, with the reference library's BICUBIC
/// filter (a = -0.5, antialiased when shrinking) in its 8-bit fixed-point arithmetic.
public func resizeBicubic(_ image: RGBImage, width: Int, height: Int) -> RGBImage {
    ImageResampler(inputWidth: image.width, inputHeight: image.height, outputWidth: width, outputHeight: height,
                   filter: .bicubic).resize(image)
}
