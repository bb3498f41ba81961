import Blip2Configs
import Blip2Convert
import Blip2Core
import Blip2Image
import Blip2Models
import Blip2ModelFile
import Blip2Pipeline
import Blip2Tokenizer
import Blip2Watch
import Foundation

// MARK: - Fuzz targets
//
// Each target takes arbitrary bytes and drives one reader of untrusted input the way the tools do. It
// may end in any error (that is the reader doing its job) but must never trap, hang, leak, or allocate
// without bound. `blip2-fuzz` runs the targets under libFuzzer (Tools/fuzz.sh); the test suite replays
// every seed and every input that ever crashed one (Tests/Fuzz/corpus, Tests/Fuzz/crashes).

public enum FuzzTarget: String, CaseIterable, Sendable {
    /// A model file: header, directory, metadata, the config and preprocessing checks, the tokenizer
    /// section, zstd tensors and the weight views the model takes (no inference).
    case modelFile = "model-file"
    /// config.json and preprocessor_config.json text, through the checks both tools run.
    case configJSON = "config-json"
    /// A checkpoint folder, framed (see `FuzzInput`): config.json, preprocessor_config.json,
    /// model.safetensors, vocab.json, merges.txt, tokenizer_config.json; converted to a model file.
    case checkpoint
    /// JPEG decoding (libjpeg, through the CImageDecode shim) and preprocessing.
    case jpeg
    /// PNG decoding (libpng, through the CImageDecode shim) and preprocessing.
    case png
    /// A tokenizer folder, framed: vocab.json, merges.txt, tokenizer_config.json; then encode and decode.
    case tokenizer
    /// A T5 tokenizer folder, framed: tokenizer.json, tokenizer_config.json; then encode and decode.
    case t5Tokenizer = "t5-tokenizer"
    /// A camera stream as `blip2 watch` reads it: an HTTP response head (chunked or not) when the bytes
    /// start with one, then Motion-JPEG cut into uneven pieces for the frame splitter, each frame decoded.
    case mjpeg
    /// An importance matrix file (`blip2 imatrix`, read by the converter), read, re-encoded and checked
    /// against its own names.
    case importanceMatrix = "imatrix"

    /// Runs the target on one input; true when every reader accepted it (what a valid seed must give).
    @discardableResult
    public func run(_ data: Data) -> Bool {
        switch self {
        case .modelFile: FuzzModelFile.run(data)
        case .configJSON: FuzzConfig.run(data)
        case .checkpoint: FuzzCheckpoint.run(data)
        case .jpeg: FuzzImage.run(data, format: .jpeg)
        case .png: FuzzImage.run(data, format: .png)
        case .tokenizer: FuzzTokenizer.run(data)
        case .t5Tokenizer: FuzzT5Tokenizer.run(data)
        case .mjpeg: FuzzMJPEG.run(data)
        case .importanceMatrix: FuzzImportanceMatrix.run(data)
        }
    }

    /// Runs the target on every file of `paths`, returning (path, seconds) for each; for replaying a
    /// corpus or a crash without libFuzzer.
    public func replay(_ paths: [String]) throws -> [(path: String, accepted: Bool, seconds: Double)] {
        try paths.map { path in
            let data = try RegularFile.contents(path, maxBytes: 1 << 30)
            let start = Date()
            let accepted = run(data)
            return (path, accepted, Date().timeIntervalSince(start))
        }
    }
}

/// Several files in one input: the parts joined by `separator`, a byte string no real file of these
/// kinds contains. Missing parts are empty.
public enum FuzzInput {
    // Built on each use: a Data kept in a global hides its buffer from LeakSanitizer (a false leak at exit).
    public static var separator: Data { Data("\n\u{0}FUZZ-NEXT-FILE\u{0}\n".utf8) }

    public static func split(_ data: Data, parts: Int) -> [Data] {
        var result: [Data] = []
        var rest = data[...]
        let separator = separator
        while result.count < parts - 1, let range = rest.range(of: separator) {
            result.append(Data(rest[..<range.lowerBound]))
            rest = rest[range.upperBound...]
        }
        result.append(Data(rest))
        while result.count < parts { result.append(Data()) }
        return result
    }

    public static func join(_ files: [Data]) -> Data {
        var data = Data()
        for (i, file) in files.enumerated() {
            if i > 0 { data.append(separator) }
            data.append(file)
        }
        return data
    }
}

/// One folder per process for the files the readers open by path (in /dev/shm where it exists, so
/// fuzzing does not wear a disk), removed at exit.
enum FuzzScratch {
    // A fuzz target runs on libFuzzer's one thread: the folder is made once and only read after.
    nonisolated(unsafe) static let folder: URL = {
        let base = FileManager.default.fileExists(atPath: "/dev/shm") ? URL(fileURLWithPath: "/dev/shm") : FileManager.default.temporaryDirectory
        let url = base.appendingPathComponent("blip2-fuzz-\(getpid())")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        atexit {
            if let path = FuzzScratch.createdPath { try? FileManager.default.removeItem(atPath: path) }
        }
        createdPath = url.path
        return url
    }()
    // Set once with the folder, read by the exit handler.
    nonisolated(unsafe) static var createdPath: String?

    /// Writes `files` (name, bytes) into a clean subfolder and returns it.
    static func folder(_ name: String, files: [(String, Data)]) -> URL {
        let url = folder.appendingPathComponent(name)
        try? FileManager.default.removeItem(at: url)
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        for (file, data) in files { try? data.write(to: url.appendingPathComponent(file)) }
        return url
    }

    static func file(_ name: String, _ data: Data) -> String {
        let url = folder.appendingPathComponent(name)
        try? data.write(to: url)
        return url.path
    }
}

// MARK: - Targets

enum FuzzImportanceMatrix {
    static func run(_ data: Data) -> Bool {
        let path = FuzzScratch.file("calibration.imatrix", withChecksumFixed(data))
        guard let matrix = try? ImportanceMatrix(contentsOf: path) else { return false }
        guard (try? matrix.encoded()) != nil else { return false }
        return (try? matrix.check(against: matrix.entries.map { ($0.key, $0.value.values.count) }, file: path)) != nil
    }

    /// Rewrites the trailing CRC-32C so mutations reach the parser behind it.
    static func withChecksumFixed(_ data: Data) -> Data {
        guard data.count >= ImportanceMatrix.magic.count + 4, Array(data.prefix(ImportanceMatrix.magic.count)) == ImportanceMatrix.magic else { return data }
        var bytes = [UInt8](data)
        let crc = crc32c(bytes[0..<(bytes.count - 4)])
        for i in 0..<4 { bytes[bytes.count - 4 + i] = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(i))) }
        return Data(bytes)
    }
}

enum FuzzModelFile {
    static func run(_ data: Data) -> Bool {
        let path = FuzzScratch.file("model.blip2", withChecksumsFixed(data))
        // As `blip2 caption` opens it: everything but inference.
        let pipeline = try? Pipeline(modelPath: path)
        if let pipeline {
            _ = pipeline.promptIds("Question: what is in the picture? Answer:")
            _ = pipeline.contextIds(promptIds: [2])
        }
        // As `blip2 inspect --verify` reads it.
        if let file = try? ModelFile(path: path, options: .init(decompressAtOpen: false)) {
            if let config = try? file.checkedConfig(), let manifest = try? WeightManifest(config: config) {
                for spec in manifest.weights.prefix(8) { _ = file.tensor(named: spec.name) }
            }
            _ = try? file.decode(QuantizationProvenance.self, section: MetadataSectionName.quantization)
            _ = file.verifyAll()
            for record in file.tensors.prefix(64) { _ = try? file.data(of: record) }
        }
        return pipeline != nil
    }

    /// Recomputes the header's region checksums and its own, where the header locates the regions, so
    /// mutations reach the parsers behind the checksums instead of stopping at them.
    static func withChecksumsFixed(_ data: Data) -> Data {
        var bytes = [UInt8](data)
        let headerSize = ModelFileFormat.headerSize
        guard bytes.count >= headerSize, Array(bytes[0..<8]) == ModelFileFormat.magic else { return data }
        func u64(_ offset: Int) -> Int {
            var value: UInt64 = 0
            for i in 0..<8 { value |= UInt64(bytes[offset + i]) << (8 * UInt64(i)) }
            return value > UInt64(Int.max / 2) ? -1 : Int(value)
        }
        func put(_ value: UInt32, at offset: Int) {
            for i in 0..<4 { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) }
        }
        for (offsetField, sizeField, crcField) in [(40, 48, 76), (56, 64, 80)] {
            let start = u64(offsetField), size = u64(sizeField)
            guard start >= 0, size >= 0, start <= bytes.count, size <= bytes.count - start else { continue }
            put(bytes[start..<(start + size)].withUnsafeBytes { crc32c($0) }, at: crcField)
        }
        put(bytes[0..<(headerSize - 4)].withUnsafeBytes { crc32c($0) }, at: headerSize - 4)
        return Data(bytes)
    }
}

enum FuzzConfig {
    static func run(_ data: Data) -> Bool {
        var accepted = false
        if let config = try? Blip2Config.decode(data, source: "config.json") {
            // Any stored size: the input's own length stands in for the weights a file would hold.
            if (try? config.check(storedElements: data.count * 1000)) != nil, let manifest = try? WeightManifest(config: config) {
                accepted = !manifest.weights.isEmpty
            }
        }
        // A preprocessor config names no side: take the one an exact size asks for, so a valid one is
        // accepted; every other form goes through the same checks with BLIP-2's side, to be refused.
        if let config = try? ImageProcessorConfig.decode(data) {
            var side = 224
            if case .exact(let height, _) = config.size { side = height }
            if let preprocessor = try? ImagePreprocessor.checked(json: data, name: "preprocessor_config.json", side: side) {
                accepted = preprocessor.outputSize(inputWidth: 640, inputHeight: 480).width == side
            }
        }
        return accepted
    }
}

enum FuzzCheckpoint {
    static let files = ["config.json", "preprocessor_config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer_config.json"]

    static func run(_ data: Data) -> Bool {
        let parts = FuzzInput.split(data, parts: files.count)
        let folder = FuzzScratch.folder("checkpoint", files: Array(zip(files, parts)))
        let output = FuzzScratch.folder.appendingPathComponent("converted.blip2").path
        var options = ConversionOptions()
        options.threads = 1
        // The first byte of the weights picks the conversion, so every writer path gets inputs.
        let choice = Int(parts[2].first ?? 0)
        options.weights = WeightPrecision.allCases[choice % WeightPrecision.allCases.count]
        options.compression = choice & 0x80 != 0 ? .zstd : .none
        options.zstdLevel = 1
        var accepted = false
        if (try? Converter.convert(checkpoint: folder, output: output, options: options)) != nil {
            // What the converter accepts must load: a model file that cannot caption is a bug.
            guard (try? Pipeline(modelPath: output)) != nil else {
                fatalError("the converter accepted a checkpoint into a model file that does not load")
            }
            accepted = true
        }
        try? FileManager.default.removeItem(atPath: output)
        return accepted
    }
}

enum FuzzImage {
    static let preprocessor = try! ImagePreprocessor(config: .blip2)

    static func run(_ data: Data, format: ImageFormat) -> Bool {
        // Only this target's format, so each target explores its own decoder.
        guard data.withUnsafeBytes({ ImageFormat.sniff($0) }) == format else { return false }
        // A smaller pixel limit than the tools' default keeps each run fast; the limit itself is unit-tested.
        let options = ImageDecodeOptions(maxPixels: 4_000_000)
        guard let image = try? ImageDecoder.decode(data: data, name: "fuzz", options: options) else { return false }
        return preprocessor.pixelValues(for: image).count == 3 * 224 * 224
    }
}

enum FuzzTokenizer {
    static let texts = ["", " ", "a photo of", "Question: what is this? Answer:", "<image> é😀\r\n\t", "<s></s><pad>"]

    static func run(_ data: Data) -> Bool {
        let parts = FuzzInput.split(data, parts: 3)
        let folder = FuzzScratch.folder("tokenizer", files: Array(zip(["vocab.json", "merges.txt", "tokenizer_config.json"], parts)))
        guard let tokenizerData = try? TokenizerData.load(huggingFaceFolder: folder, imageTokenIndex: nil),
              let tokenizer = try? OPTTokenizer(tokenizerData) else { return false }
        for text in texts + [String(decoding: parts[2].prefix(256), as: UTF8.self)] {
            let ids = tokenizer.encode(text)
            _ = tokenizer.decode(ids, skipSpecialTokens: false)
            _ = try? tokenizer.encode(text, imageTokenCount: 2)
        }
        _ = tokenizer.decode(Array(0..<min(tokenizer.vocabularySize, 64)))
        _ = tokenizer.decodeStripped([tokenizer.vocabularySize, -1, 0])
        return true
    }
}

enum FuzzT5Tokenizer {
    static let texts = ["", " ", "a photo of", "Question: what is this? Answer:", "ﬁ Å １２ é😀\r\n\t  x", "<extra_id_0></s><pad>▁"]

    static func run(_ data: Data) -> Bool {
        let parts = FuzzInput.split(data, parts: 2)
        let folder = FuzzScratch.folder("t5-tokenizer", files: Array(zip(["tokenizer.json", "tokenizer_config.json"], parts)))
        guard let tokenizerData = try? T5TokenizerData.load(huggingFaceFolder: folder),
              let tokenizer = try? T5Tokenizer(tokenizerData) else { return false }
        for text in texts + [String(decoding: parts[1].prefix(256), as: UTF8.self)] {
            let ids = tokenizer.encode(text)
            _ = tokenizer.decode(ids, skipSpecialTokens: false)
            _ = tokenizer.decode(ids, skipSpecialTokens: true)
            _ = try? tokenizer.encode(text, imageTokenCount: 2)
        }
        _ = tokenizer.decode(Array(0..<min(tokenizer.vocabularySize, 64)) + [tokenizer.vocabularySize, -1])
        return true
    }
}

enum FuzzMJPEG {
    static func run(_ data: Data) -> Bool {
        var body = [UInt8](data)
        if body.starts(with: Array("HTTP/1.".utf8)) {
            guard let end = HTTPResponseHead.end(in: Array(body.prefix(HTTPResponseHead.maxBytes))),
                  let head = try? HTTPResponseHead(parsing: Array(body[..<end])) else { return false }
            body.removeFirst(end)
            if head.isChunked {
                var decoder = ChunkedDecoder()
                var decoded: [UInt8] = []
                let ok = body.withUnsafeBytes { bytes in
                    (try? decoder.push(bytes) { decoded.append(contentsOf: $0) }) != nil
                }
                guard ok else { return false }
                body = decoded
            }
        }
        // The pieces' lengths follow the input's length, so one input always splits the same way; a small
        // frame limit reaches the too-large path without large inputs.
        var splitter = MJPEGSplitter(maxFrameBytes: 16 << 10)
        var frames: [Data] = []
        var state = UInt64(body.count) &* 6364136223846793005 &+ 1442695040888963407
        var start = 0
        while start < body.count {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let length = min(body.count - start, 1 + Int(state >> 33) % 700)
            body[start..<(start + length)].withUnsafeBytes { piece in
                splitter.push(piece) { event in if case .frame(let frame) = event { frames.append(frame) } }
            }
            start += length
        }
        _ = splitter.finish()
        let options = ImageDecodeOptions(maxPixels: 4_000_000)
        var decoded = 0
        for frame in frames where (try? ImageDecoder.decode(data: frame, name: "frame", options: options)) != nil {
            decoded += 1
        }
        return decoded > 0
    }
}
