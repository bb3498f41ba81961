import Blip2Configs
import Blip2Core
import Blip2ModelFile
import Foundation

public struct ConversionError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

// MARK: - Hugging Face checkpoint folder
//
// config.json, then either model.safetensors or the shards a model.safetensors.index.json names.
// Shards are memory-mapped; tensors are read in place.

public final class Checkpoint {
    public let folder: URL
    public let config: Blip2Config
    public let configJSON: Data
    public let shards: [SafeTensorsFile]
    /// Key -> (shard index, entry).
    public let tensors: [String: (shard: Int, entry: SafeTensorsEntry)]

    public init(folder: URL) throws {
        self.folder = folder
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ConversionError("\(folder.path): not a checkpoint folder (it does not exist or is not a directory)")
        }
        let configURL = folder.appendingPathComponent("config.json")
        guard FileManager.default.fileExists(atPath: configURL.path) else {
            throw ConversionError("\(configURL.path): missing; a Hugging Face checkpoint folder has config.json beside its safetensors files")
        }
        var configJSON = try Self.readJSON(configURL)
        var config = try Blip2Config.decode(configJSON, source: configURL.path)

        let single = folder.appendingPathComponent("model.safetensors")
        let indexURL = folder.appendingPathComponent("model.safetensors.index.json")
        var shardNames: [String]
        var weightMap: [String: String]? = nil
        if FileManager.default.fileExists(atPath: indexURL.path) {
            (shardNames, weightMap) = try Self.readIndex(indexURL)
        } else if FileManager.default.fileExists(atPath: single.path) {
            shardNames = ["model.safetensors"]
        } else {
            let bins = (try? FileManager.default.contentsOfDirectory(atPath: folder.path))?.filter { $0.hasSuffix(".bin") } ?? []
            throw ConversionError("\(folder.path): no model.safetensors or model.safetensors.index.json"
                + (bins.isEmpty ? "" : " (PyTorch .bin weights are not read: re-save with save_pretrained(safe_serialization=True))"))
        }
        shardNames.sort()
        var shards: [SafeTensorsFile] = []
        var tensors: [String: (shard: Int, entry: SafeTensorsEntry)] = [:]
        for (i, name) in shardNames.enumerated() {
            let url = folder.appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: url.path) else {
                throw ConversionError("\(url.path): missing shard named by model.safetensors.index.json")
            }
            let shard = try SafeTensorsFile(path: url.path)
            for entry in shard.entries {
                if let previous = tensors[entry.name] {
                    throw ConversionError("tensor '\(entry.name)' is stored twice: in \(shardNames[previous.shard]) and \(name)")
                }
                if let weightMap, weightMap[entry.name] != name {
                    throw ConversionError("\(url.path): holds '\(entry.name)', which model.safetensors.index.json places in \(weightMap[entry.name] ?? "no shard")")
                }
                tensors[entry.name] = (i, entry)
            }
            shards.append(shard)
        }
        if let weightMap {
            for (key, file) in weightMap.sorted(by: { $0.key < $1.key }) where tensors[key] == nil {
                throw ConversionError("\(folder.appendingPathComponent(file).path): model.safetensors.index.json places '\(key)' here but the shard lacks it (incomplete download?)")
            }
        }
        // Only now, with the stored weights known, can the config's sizes be judged.
        let stored = shards.flatMap(\.entries).reduce(0) { total, entry in
            let (sum, overflow) = total.addingReportingOverflow(entry.elementCount)
            return overflow ? Int.max : sum
        }
        if config.t5Config != nil {
            (config, configJSON) = try Self.resolvingT5Head(config, json: configJSON, headStored: tensors[WeightManifest.outputHeadKey] != nil,
                                                            source: configURL.path)
        }
        do { try config.check(storedElements: stored) } catch let error as ConfigError {
            throw ConversionError("\(configURL.path): \(error.message)")
        }
        self.config = config
        self.configJSON = configJSON
        self.shards = shards
        self.tensors = tensors
    }

    /// Largest JSON side file read (configs, the shard index): real ones are kilobytes.
    static let maxJSONBytes = 64 << 20

    /// A JSON file of the checkpoint, read only if it is a regular file of sane size.
    static func readJSON(_ url: URL) throws -> Data {
        do { return try RegularFile.contents(url.path, maxBytes: maxJSONBytes) } catch let error as FileError {
            throw ConversionError(error.description)
        }
    }

    private static func readIndex(_ url: URL) throws -> ([String], [String: String]) {
        let json: Any
        let data = try readJSON(url)
        do { json = try JSONSerialization.jsonObject(with: data) } catch {
            throw ConversionError("\(url.path): not valid JSON (\(error.localizedDescription))")
        }
        guard let object = json as? [String: Any], let map = object["weight_map"] as? [String: String] else {
            throw ConversionError("\(url.path): no \"weight_map\" object of key -> shard file")
        }
        for file in Set(map.values) where file.contains("/") || file.hasPrefix(".") || !file.hasSuffix(".safetensors") {
            throw ConversionError("\(url.path): shard name '\(file)' is not a plain .safetensors file name")
        }
        return (Array(Set(map.values)), map)
    }

    public func shardPath(_ index: Int) -> String { shards[index].path }
}
