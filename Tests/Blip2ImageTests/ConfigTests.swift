import Foundation
import Testing
@testable import Blip2Image

@Suite("Preprocessing configuration")
struct ConfigTests {
    /// The preprocessor_config.json of Salesforce/blip2-opt-2.7b.
    static let blip2JSON = """
    {
      "do_convert_rgb": true,
      "do_normalize": true,
      "do_rescale": true,
      "do_resize": true,
      "image_mean": [0.48145466, 0.4578275, 0.40821073],
      "image_processor_type": "BlipImageProcessor",
      "image_std": [0.26862954, 0.26130258, 0.27577711],
      "processor_class": "Blip2Processor",
      "resample": 3,
      "rescale_factor": 0.00392156862745098,
      "size": {"height": 224, "width": 224}
    }
    """

    @Test("the BLIP-2 checkpoint's file gives the BLIP-2 settings")
    func blip2File() throws {
        let config = try ImageProcessorConfig.decode(Data(Self.blip2JSON.utf8))
        #expect(config == ImageProcessorConfig.blip2)
        #expect(config.rescaleFactor == 1.0 / 255.0)
        let preprocessor = try ImagePreprocessor(config: config)
        #expect(preprocessor.outputWidth == 224 && preprocessor.outputHeight == 224)
    }

    @Test("absent keys take BlipImageProcessor's defaults")
    func defaults() throws {
        let config = try ImageProcessorConfig.decode(Data("{}".utf8))
        #expect(config.size == .exact(height: 384, width: 384))
        #expect(config.resample == .bicubic)
        #expect(config.doResize && config.doRescale && config.doNormalize && config.doConvertRGB)
        #expect(config.imageMean == [0.48145466, 0.4578275, 0.40821073])
        #expect(config.imageStd == [0.26862954, 0.26130258, 0.27577711])
    }

    @Test("the size forms the reference accepts")
    func sizeForms() throws {
        func size(_ json: String) throws -> ImageProcessorConfig.Size {
            try ImageProcessorConfig.decode(Data("{\"size\": \(json)}".utf8)).size
        }
        #expect(try size("224") == .exact(height: 224, width: 224))
        #expect(try size("[20, 30]") == .exact(height: 20, width: 30))
        #expect(try size("{\"shortest_edge\": 16}") == .shortestEdge(16))
        #expect(try size("{\"shortest_edge\": 16, \"longest_edge\": 20}") == .shortestAndLongestEdge(shortest: 16, longest: 20))
        #expect(try size("{\"max_height\": 5, \"max_width\": 6}") == .maxHeightWidth(maxHeight: 5, maxWidth: 6))
        #expect(try size("null") == .exact(height: 384, width: 384))
    }

    @Test("a single mean or std applies to every channel")
    func scalarMean() throws {
        let config = try ImageProcessorConfig.decode(Data("{\"image_mean\": 0.5, \"image_std\": 0.25}".utf8))
        #expect(config.imageMean == [0.5, 0.5, 0.5])
        #expect(config.imageStd == [0.25, 0.25, 0.25])
    }

    @Test("normalization from first principles")
    func normalization() throws {
        var config = ImageProcessorConfig.blip2
        config.size = .exact(height: 1, width: 1)
        let preprocessor = try ImagePreprocessor(config: config)
        let values = preprocessor.pixelValues(for: RGBImage(width: 1, height: 1, pixels: [0, 128, 255]))
        let expected: [Float] = [
            (Float(0.0) - Float(0.48145466)) / Float(0.26862954),
            (Float(128.0 / 255.0) - Float(0.4578275)) / Float(0.26130258),
            (Float(1.0) - Float(0.40821073)) / Float(0.27577711),
        ]
        #expect(values == expected)
    }

    @Test("encoding and decoding round-trip")
    func roundTrip() throws {
        var config = ImageProcessorConfig.blip2
        config.size = .shortestAndLongestEdge(shortest: 10, longest: 20)
        config.resample = .lanczos
        let data = try JSONEncoder().encode(config)
        #expect(try ImageProcessorConfig.decode(data) == config)
    }

    @Test("unusable configurations are refused with a reason")
    func invalid() throws {
        func decodeError(_ json: String) -> ImageError? {
            do { _ = try ImageProcessorConfig.decode(Data(json.utf8), name: "test.json"); return nil } catch let error as ImageError {
                return error
            } catch { return nil }
        }
        for json in ["{\"resample\": 9}", "{\"size\": {}}", "{\"size\": [1, 2, 3]}", "{\"do_resize\": \"yes\"}", "not json"] {
            let error = decodeError(json)
            guard case .invalidConfig(let name, _) = error else {
                Issue.record("\(json): expected invalidConfig, got \(String(describing: error))")
                continue
            }
            #expect(name == "test.json")
        }
        func initError(_ change: (inout ImageProcessorConfig) -> Void) -> Bool {
            var config = ImageProcessorConfig.blip2
            change(&config)
            do { _ = try ImagePreprocessor(config: config); return false } catch ImageError.invalidConfig { return true } catch { return false }
        }
        #expect(initError { $0.imageMean = [0.5, 0.5] })
        #expect(initError { $0.imageStd = [0.5, 0, 0.5] })
        #expect(initError { $0.resample = .nearest })
        #expect(initError { $0.doCenterCrop = true })
        #expect(initError { $0.size = .exact(height: 0, width: 224) })
        #expect(initError { $0.size = .shortestEdge(-1) })
    }

    @Test("size fields beyond 2^16 are refused by file and field before any size is computed from them")
    func hugeSizes() {
        let sizes = [
            (#"{"shortest_edge": 9223372036854775807}"#, "size.shortest_edge"),
            (#"{"shortest_edge": 4611686018427387904, "longest_edge": 4611686018427387905}"#, "size.shortest_edge"),
            (#"{"shortest_edge": 224, "longest_edge": 4611686018427387905}"#, "size.longest_edge"),
            (#"{"max_height": 9223372036854775807, "max_width": 9223372036854775806}"#, "size.max_height"),
            (#"{"height": 224, "width": 65537}"#, "size.width"),
            ("9223372036854775807", "size.height"),
        ]
        let name = "ckpt/preprocessor_config.json"
        for (size, field) in sizes {
            let json = Data(Self.blip2JSON.replacingOccurrences(of: #"{"height": 224, "width": 224}"#, with: size).utf8)
            #expect(json != Data(Self.blip2JSON.utf8))
            #expect {
                try ImagePreprocessor.checked(json: json, name: name, side: 224)
            } throws: { error in
                guard case ImageError.invalidConfig(let errorName, let reason) = error else { return false }
                return errorName == name && reason.contains(field) && reason.contains("outside 1...65536")
            }
        }
        // The largest allowed edges are only refused for not matching the model.
        let largest = Data(Self.blip2JSON.replacingOccurrences(of: #"{"height": 224, "width": 224}"#,
                                                                with: #"{"shortest_edge": 65536, "longest_edge": 65536}"#).utf8)
        #expect { try ImagePreprocessor.checked(json: largest, name: name, side: 224) } throws: { error in
            guard case ImageError.invalidConfig(_, let reason) = error else { return false }
            return reason.contains("65536x65536 (for a square input)")
        }
    }

    @Test("output sizes saturate instead of overflowing for any input")
    func outputSizeArithmetic() {
        // shortest_edge 2^40 on a 1 x 2^40 input: the long edge would be 2^80, held at 2^62.
        #expect(ImageProcessorConfig.Size.shortestEdge(1 << 40).outputSize(inputWidth: 1, inputHeight: 1 << 40) == (1 << 40, 1 << 62))
        let box = ImageProcessorConfig.Size.maxHeightWidth(maxHeight: .max, maxWidth: .max)
        #expect(box.outputSize(inputWidth: 1, inputHeight: 1) == (1 << 62, 1 << 62))
        #expect(box.outputSize(inputWidth: 0, inputHeight: 0) == (0, 0))
        // Ordinary sizes are as the reference computes them: 224 * 640 / 480 = 298.67, truncated.
        #expect(ImageProcessorConfig.Size.shortestEdge(224).outputSize(inputWidth: 640, inputHeight: 480) == (298, 224))
    }

    @Test("loading names the file in errors")
    func loading() throws {
        let missing = URL(fileURLWithPath: "/nonexistent/preprocessor_config.json")
        #expect(throws: ImageError.fileNotFound(path: missing.path)) { try ImageProcessorConfig.load(contentsOf: missing) }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("blip2-image-config-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let good = directory.appendingPathComponent("preprocessor_config.json")
        try Data(Self.blip2JSON.utf8).write(to: good)
        #expect(try ImageProcessorConfig.load(contentsOf: good) == .blip2)
        let bad = directory.appendingPathComponent("broken.json")
        try Data("{\"size\": ".utf8).write(to: bad)
        #expect {
            try ImageProcessorConfig.load(contentsOf: bad)
        } throws: { error in
            guard case ImageError.invalidConfig(let name, _) = error else { return false }
            return name == bad.path
        }
    }
}
