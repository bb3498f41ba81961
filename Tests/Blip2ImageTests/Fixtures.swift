import Foundation
@testable import Blip2Image

/// A NumPy .npy array: just enough of the format (version 1-3, C order) for the reference fixtures.
struct NPYArray {
    let descr: String
    let shape: [Int]
    let payload: Data

    enum ReadError: Error, CustomStringConvertible {
        case malformed(String, String)
        var description: String {
            switch self { case .malformed(let file, let why): return "\(file): not a readable .npy file (\(why))" }
        }
    }

    init(contentsOf url: URL) throws {
        let data = try Data(contentsOf: url)
        let bytes = [UInt8](data)
        let name = url.lastPathComponent
        guard bytes.count >= 10, bytes[0] == 0x93, Array(bytes[1..<6]) == Array("NUMPY".utf8) else {
            throw ReadError.malformed(name, "bad magic")
        }
        let major = bytes[6]
        let headerLength: Int, headerStart: Int
        if major == 1 {
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        } else {
            guard bytes.count >= 12 else { throw ReadError.malformed(name, "short header") }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        }
        guard headerStart + headerLength <= bytes.count else { throw ReadError.malformed(name, "header past the end") }
        let header = String(decoding: bytes[headerStart..<headerStart + headerLength], as: UTF8.self)
        func value(of key: String) -> Substring? {
            guard let range = header.range(of: "'\(key)': ") else { return nil }
            return header[range.upperBound...]
        }
        guard let descrText = value(of: "descr"), descrText.first == "'",
              let end = descrText.dropFirst().firstIndex(of: "'") else { throw ReadError.malformed(name, "no descr") }
        descr = String(descrText[descrText.index(after: descrText.startIndex)..<end])
        guard let fortran = value(of: "fortran_order"), fortran.hasPrefix("False") else {
            throw ReadError.malformed(name, "Fortran order is not supported")
        }
        guard let shapeText = value(of: "shape"), let close = shapeText.firstIndex(of: ")") else {
            throw ReadError.malformed(name, "no shape")
        }
        shape = shapeText[shapeText.index(after: shapeText.startIndex)..<close]
            .split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        payload = data.subdata(in: (headerStart + headerLength)..<data.count)
        let itemSize = descr.hasSuffix("1") ? 1 : descr.hasSuffix("4") ? 4 : 0
        guard itemSize > 0, payload.count == shape.reduce(1, *) * itemSize else {
            throw ReadError.malformed(name, "\(payload.count) data bytes for shape \(shape) and type \(descr)")
        }
    }

    var uint8s: [UInt8] {
        precondition(descr == "|u1", "not uint8: \(descr)")
        return [UInt8](payload)
    }

    var float32s: [Float] {
        precondition(descr == "<f4", "not little-endian float32: \(descr)")
        return payload.withUnsafeBytes { raw in
            (0..<payload.count / 4).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
        }
    }
}

/// Tests/Fixtures/images, found from this source file so tests run from any working directory.
let imageFixtures = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/images")

struct FixtureCase: Sendable, CustomStringConvertible {
    let name: String
    let file: String
    let pilMode: String
    let width: Int
    let height: Int
    let rgbCRC32: UInt32
    let rgbNPY: String?
    let processorJSON: Data
    let outputWidth: Int
    let outputHeight: Int
    let resizedNPY: String
    let pixelsNPY: String?
    var description: String { name }
    var url: URL { imageFixtures.appendingPathComponent(file) }
}

struct BrokenFixture: Sendable, CustomStringConvertible {
    let file: String
    let expect: String
    let pil: String
    let knownDifference: String?
    var description: String { (file as NSString).lastPathComponent }
    var url: URL { imageFixtures.appendingPathComponent(file) }
}

struct SizeFixture: Sendable, CustomStringConvertible {
    let sizeJSON: Data
    let input: (width: Int, height: Int)
    let output: (width: Int, height: Int)?
    var description: String { "\(String(decoding: sizeJSON, as: UTF8.self)) \(input.width)x\(input.height)" }
}

/// The manifest written by Tools/make_image_fixtures.py. Loading failures surface as an empty list plus
/// `manifestProblem`, which a dedicated test reports.
enum Manifest {
    static let loaded: (cases: [FixtureCase], broken: [BrokenFixture], sizes: [SizeFixture], problem: String?) = load()
    static var cases: [FixtureCase] { loaded.cases }
    static var broken: [BrokenFixture] { loaded.broken }
    static var sizes: [SizeFixture] { loaded.sizes }

    private static func load() -> ([FixtureCase], [BrokenFixture], [SizeFixture], String?) {
        let url = imageFixtures.appendingPathComponent("manifest.json")
        guard let data = try? Data(contentsOf: url),
              let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let cases = root["cases"] as? [[String: Any]],
              let errors = root["errors"] as? [[String: Any]],
              let sizes = root["size_cases"] as? [[String: Any]]
        else { return ([], [], [], "cannot read \(url.path); run Tools/make_image_fixtures.py") }
        let fixtures: [FixtureCase] = cases.compactMap { entry in
            guard let name = entry["name"] as? String, let file = entry["file"] as? String,
                  let mode = entry["pil_mode"] as? String, let width = entry["width"] as? Int,
                  let height = entry["height"] as? Int, let crc = entry["rgb_crc32"] as? Int,
                  let processor = entry["processor"], let outputWidth = entry["output_width"] as? Int,
                  let outputHeight = entry["output_height"] as? Int, let resized = entry["resized_npy"] as? String,
                  let processorJSON = try? JSONSerialization.data(withJSONObject: processor)
            else { return nil }
            return FixtureCase(name: name, file: file, pilMode: mode, width: width, height: height, rgbCRC32: UInt32(crc),
                               rgbNPY: entry["rgb_npy"] as? String, processorJSON: processorJSON,
                               outputWidth: outputWidth, outputHeight: outputHeight, resizedNPY: resized,
                               pixelsNPY: entry["pixels_npy"] as? String)
        }
        let broken: [BrokenFixture] = errors.compactMap { entry in
            guard let file = entry["file"] as? String, let expect = entry["expect"] as? String,
                  let pil = entry["pil"] as? String else { return nil }
            return BrokenFixture(file: file, expect: expect, pil: pil, knownDifference: entry["known_difference"] as? String)
        }
        let sizeFixtures: [SizeFixture] = sizes.compactMap { entry in
            guard let size = entry["size"], let input = entry["input"] as? [Int], input.count == 2,
                  let sizeJSON = try? JSONSerialization.data(withJSONObject: ["size": size]) else { return nil }
            let output = (entry["output"] as? [Int]).map { (width: $0[0], height: $0[1]) }
            return SizeFixture(sizeJSON: sizeJSON, input: (input[0], input[1]), output: output)
        }
        let problem = fixtures.count == cases.count && broken.count == errors.count && sizeFixtures.count == sizes.count
            ? nil : "manifest entries that could not be read"
        return (fixtures, broken, sizeFixtures, problem)
    }
}

func loadNPY(_ relativePath: String) throws -> NPYArray {
    try NPYArray(contentsOf: imageFixtures.appendingPathComponent(relativePath))
}

func crc32(_ bytes: [UInt8]) -> UInt32 {
    bytes.withUnsafeBytes { CRC32.checksum($0) }
}
