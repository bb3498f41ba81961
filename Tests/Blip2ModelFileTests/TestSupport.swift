import Foundation
@testable import Blip2Core
@testable import Blip2ModelFile

/// A fresh temporary directory per test, removed when the value is dropped.
final class TemporaryDirectory {
    let url: URL
    init() {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("blip2-tests-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(at: url) }
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
    var contents: [String] { (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? [] }
}

func readBytes(_ path: String) -> [UInt8] { Array(try! Data(contentsOf: URL(fileURLWithPath: path))) }
func writeBytes(_ bytes: [UInt8], _ path: String) { try! Data(bytes).write(to: URL(fileURLWithPath: path)) }

extension Array where Element == UInt8 {
    func u32(at offset: Int) -> UInt32 { self[offset..<(offset + 4)].enumerated().reduce(0) { $0 | UInt32($1.element) << (8 * $1.offset) } }
    func u64(at offset: Int) -> UInt64 { self[offset..<(offset + 8)].enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * $1.offset) } }
    mutating func setU32(_ value: UInt32, at offset: Int) { for i in 0..<4 { self[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) } }
    mutating func setU64(_ value: UInt64, at offset: Int) { for i in 0..<8 { self[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) } }

    /// Recomputes the header, directory and metadata checksums so a deliberately hostile edit gets past
    /// them and exercises the structural checks behind.
    mutating func refreshChecksums() {
        let dirOffset = Int(u64(at: 40)), dirSize = Int(u64(at: 48)), metaOffset = Int(u64(at: 56)), metaSize = Int(u64(at: 64))
        if dirOffset + dirSize <= count { setU32(crc32c(Array(self[dirOffset..<(dirOffset + dirSize)])), at: 76) }
        if metaOffset + metaSize <= count { setU32(crc32c(Array(self[metaOffset..<(metaOffset + metaSize)])), at: 80) }
        setU32(crc32c(Array(self[0..<124])), at: 124)
    }
}

func floatBytes(_ values: [Float]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }
