import Foundation
import Testing
@testable import Blip2ModelFile

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let fixtureModels = packageRoot.appendingPathComponent("Tests/Fixtures/models")
let fixtureNames = ["base-f32", "bf16-sharded-untied", "deep-f16-tied", "f16-noqkvbias-eos2", "legacy-4x-f32",
                    "odd-hidden-f32", "sharded-untied-f32"]

func checkpoint(_ name: String) -> URL { fixtureModels.appendingPathComponent(name).appendingPathComponent("checkpoint") }

/// The tensor list `transformers` saved (Tools/make_fixtures.py wrote it from the checkpoint).
struct FixtureTensorList: Decodable {
    struct Tensor: Decodable { let name: String; let dtype: String; let shape: [Int] }
    let tensors: [Tensor]
    static func load(_ model: String) throws -> FixtureTensorList {
        try JSONDecoder().decode(Self.self, from: Data(contentsOf: fixtureModels.appendingPathComponent(model).appendingPathComponent("tensors.json")))
    }
}

final class Scratch {
    let url: URL
    init() {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("blip2-convert-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(at: url) }
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
    var contents: [String] { ((try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []).sorted() }

    /// A writable copy of a fixture checkpoint, to break on purpose.
    func copy(of model: String) throws -> URL {
        let destination = url.appendingPathComponent("\(model)-copy")
        try FileManager.default.copyItem(at: checkpoint(model), to: destination)
        return destination
    }
}

/// Writes safetensors files for tests that need a checkpoint the fixtures do not have.
struct SafeTensorsBuilder {
    struct Item { let name: String; let dtype: String; let shape: [Int]; let bytes: [UInt8] }
    var items: [Item] = []

    mutating func add(_ name: String, dtype: String, shape: [Int], bytes: [UInt8]) {
        items.append(Item(name: name, dtype: dtype, shape: shape, bytes: bytes))
    }

    func write(to url: URL) throws {
        var header: [String: Any] = ["__metadata__": ["format": "pt"]]
        var data: [UInt8] = []
        for item in items {
            header[item.name] = ["dtype": item.dtype, "shape": item.shape, "data_offsets": [data.count, data.count + item.bytes.count]]
            data += item.bytes
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(UInt8(ascii: " ")) }
        var out = (0..<8).map { UInt8(truncatingIfNeeded: UInt64(json.count) >> (8 * $0)) }
        out += json
        out += data
        try Data(out).write(to: url)
    }

    /// Every tensor of an existing safetensors file, to rewrite with changes.
    static func reading(_ url: URL) throws -> SafeTensorsBuilder {
        let file = try SafeTensorsFile(path: url.path)
        var builder = SafeTensorsBuilder()
        for entry in file.entries {
            builder.add(entry.name, dtype: entry.dtype.description, shape: entry.shape, bytes: Array(file.bytes(of: entry)))
        }
        return builder
    }
}

func floats(_ bytes: UnsafeRawBufferPointer) -> [Float] { Array(bytes.bindMemory(to: Float.self)) }
