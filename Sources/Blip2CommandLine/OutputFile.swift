import Foundation

/// Why an output path cannot be written; checked before any work so no result is printed first.
public struct OutputPathError: Error, CustomStringConvertible {
    public let description: String
}

/// Checks that `path` can become an output file: its folder exists, and it is not itself a folder.
/// `flag` names the option in the message.
public func checkOutputPath(_ path: String, flag: String) throws {
    let url = URL(fileURLWithPath: path)
    let folder = url.deletingLastPathComponent().path
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
        throw OutputPathError(description: "\(flag) \(path): the folder \(folder) does not exist")
    }
    if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue {
        throw OutputPathError(description: "\(flag) \(path) is a folder; give a file name")
    }
}
