import Blip2Configs
import Foundation

extension ModelFile {
    /// The `config` section, decoded and checked (`Blip2Config.check`) against the weights this file
    /// stores. Every reader of a model file takes its config from here before sizing anything by it.
    public func checkedConfig() throws -> Blip2Config {
        let source = "\(path): metadata section '\(MetadataSectionName.config)'"
        guard let section = section(named: MetadataSectionName.config) else {
            throw ConfigError("\(source) is missing; convert the checkpoint again")
        }
        let stored = tensors.reduce(0) { total, record in
            let (sum, overflow) = total.addingReportingOverflow(record.elementCount)
            return overflow ? Int.max : sum
        }
        let config = try Blip2Config.decode(Data(section.json), source: source)
        do { try config.check(storedElements: stored) } catch let error as ConfigError {
            throw ConfigError("\(source): \(error.message)")
        }
        return config
    }
}
