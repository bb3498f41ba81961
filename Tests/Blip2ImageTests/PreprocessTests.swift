import Foundation
import Testing
@testable import Blip2Image

@Suite("Resizing and pixel values match the reference")
struct PreprocessTests {
    /// Channel-first copy of interleaved RGB, the layout of the reference arrays.
    private func channelFirst(_ image: RGBImage) -> [UInt8] {
        let plane = image.width * image.height
        var out = [UInt8](repeating: 0, count: 3 * plane)
        for index in 0..<plane {
            for channel in 0..<3 { out[channel * plane + index] = image.pixels[3 * index + channel] }
        }
        return out
    }

    @Test("resized uint8 pixels are identical to the reference resize", arguments: Manifest.cases)
    func resizeMatches(_ fixture: FixtureCase) throws {
        let config = try ImageProcessorConfig.decode(fixture.processorJSON, name: fixture.name)
        let preprocessor = try ImagePreprocessor(config: config)
        let image = try ImageDecoder.decode(contentsOf: fixture.url)
        let resized = preprocessor.resized(image)
        #expect(resized.width == fixture.outputWidth)
        #expect(resized.height == fixture.outputHeight)
        let reference = try loadNPY(fixture.resizedNPY)
        #expect(reference.shape == [3, fixture.outputHeight, fixture.outputWidth])
        let ours = channelFirst(resized)
        let expected = reference.uint8s
        try #require(ours.count == expected.count)
        let differences = zip(ours, expected).map { abs(Int($0) - Int($1)) }
        let differing = differences.filter { $0 != 0 }.count
        #expect(differing == 0, "\(differing) of \(expected.count) samples differ, the largest by \(differences.max() ?? 0)")
    }

    @Test("pixel values are within 1e-5 of the reference", arguments: Manifest.cases.filter { $0.pixelsNPY != nil })
    func pixelValuesMatch(_ fixture: FixtureCase) throws {
        let config = try ImageProcessorConfig.decode(fixture.processorJSON, name: fixture.name)
        let preprocessor = try ImagePreprocessor(config: config)
        let values = preprocessor.pixelValues(for: try ImageDecoder.decode(contentsOf: fixture.url))
        let reference = try loadNPY(try #require(fixture.pixelsNPY))
        #expect(reference.shape == [3, fixture.outputHeight, fixture.outputWidth])
        let expected = reference.float32s
        try #require(values.count == expected.count)
        let largest = zip(values, expected).map { abs($0 - $1) }.max() ?? 0
        #expect(largest <= 1e-5, "largest difference \(largest)")
        let bitIdentical = zip(values, expected).allSatisfy { $0.bitPattern == $1.bitPattern }
        #expect(bitIdentical, "values are close but not bit-identical")
    }

    @Test("output sizes follow the reference for every size form", arguments: Manifest.sizes)
    func outputSizes(_ fixture: SizeFixture) throws {
        let config = try ImageProcessorConfig.decode(fixture.sizeJSON)
        let preprocessor = try ImagePreprocessor(config: config)
        let size = preprocessor.outputSize(inputWidth: fixture.input.width, inputHeight: fixture.input.height)
        if let output = fixture.output {
            #expect(size.width == output.width && size.height == output.height)
        } else {
            // The reference fails on an empty output; we clamp to one pixel instead.
            #expect(size.width >= 1 && size.height >= 1)
        }
    }

    @Test("a constant image stays constant under every filter and size", arguments: [ResampleFilter.bicubic, .bilinear, .lanczos, .box, .hamming])
    func constantImage(_ filter: ResampleFilter) {
        // Each output is a normalized weighted sum, so a flat input must come out flat (first principles).
        for (inputWidth, inputHeight, outputWidth, outputHeight) in [(1, 1, 9, 4), (37, 23, 5, 11), (640, 480, 224, 224), (3, 300, 300, 3)] {
            let image = RGBImage(width: inputWidth, height: inputHeight,
                                 pixels: [UInt8]((0..<inputWidth * inputHeight).flatMap { _ in [200, 13, 77] as [UInt8] }))
            let resized = ImageResampler(inputWidth: inputWidth, inputHeight: inputHeight, outputWidth: outputWidth,
                                         outputHeight: outputHeight, filter: filter).resize(image)
            #expect(resized.width == outputWidth && resized.height == outputHeight)
            let flat = stride(from: 0, to: resized.pixels.count, by: 3).allSatisfy {
                resized.pixels[$0] == 200 && resized.pixels[$0 + 1] == 13 && resized.pixels[$0 + 2] == 77
            }
            #expect(flat, "\(inputWidth)x\(inputHeight) -> \(outputWidth)x\(outputHeight)")
        }
    }

    @Test("same-size resize returns the image unchanged")
    func identity() {
        let pixels = (0..<(7 * 5 * 3)).map { UInt8(truncatingIfNeeded: $0 * 37) }
        let image = RGBImage(width: 7, height: 5, pixels: pixels)
        #expect(resizeBicubic(image, width: 7, height: 5) == image)
    }

    @Test("a reused resampler gives the same result as a fresh one")
    func reusedResampler() throws {
        let fixture = try #require(Manifest.cases.first { $0.name == "jpeg_baseline_640x480" })
        let image = try ImageDecoder.decode(contentsOf: fixture.url)
        let preprocessor = try ImagePreprocessor(config: .blip2)
        let resampler = preprocessor.makeResampler(inputWidth: image.width, inputHeight: image.height)
        let first = preprocessor.pixelValues(for: image, using: resampler)
        let second = preprocessor.pixelValues(for: image, using: resampler)
        #expect(first == second)
        #expect(first == preprocessor.pixelValues(for: image))
        #expect(first.count == 3 * 224 * 224)
    }

    @Test("bicubic weights: the kernel at the reference's sample points")
    func bicubicKernel() {
        // Keys' cubic with a = -0.5, from its definition.
        #expect(ResampleFilter.bicubic.weight(0) == 1)
        #expect(ResampleFilter.bicubic.weight(1) == 0)
        #expect(ResampleFilter.bicubic.weight(-2) == 0)
        #expect(ResampleFilter.bicubic.weight(0.5) == 0.5625)
        #expect(ResampleFilter.bicubic.weight(1.5) == -0.0625)
        // Upscaling by 2: output 0 of a 2x upscale centers at 0.25, reading inputs 0 and 1 (and -1 clamped away).
        let axis = ResampleAxis(inputSize: 4, outputSize: 8, filter: .bicubic)
        #expect(axis.starts[0] == 0)
        #expect(axis.weights[0..<axis.counts[0]].reduce(0, +) == 1 << 22)
    }

    @Test("timing: decode and resize a 640x480 JPEG to 224x224")
    func timing() throws {
        let fixture = try #require(Manifest.cases.first { $0.name == "jpeg_baseline_640x480" })
        let data = try Data(contentsOf: fixture.url)
        let preprocessor = try ImagePreprocessor(config: .blip2)
        var decodeTotal = 0.0, preprocessTotal = 0.0
        let runs = 20
        for _ in 0..<runs {
            let start = Date()
            let image = try ImageDecoder.decode(data: data, name: fixture.name)
            let decoded = Date()
            let values = preprocessor.pixelValues(for: image)
            let end = Date()
            #expect(values.count == 3 * 224 * 224)
            decodeTotal += decoded.timeIntervalSince(start)
            preprocessTotal += end.timeIntervalSince(decoded)
        }
        print(String(format: "640x480 JPEG: decode %.2f ms, resize+normalize %.2f ms (mean of %d)",
                     decodeTotal / Double(runs) * 1000, preprocessTotal / Double(runs) * 1000, runs))
    }
}
