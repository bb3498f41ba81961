import Foundation
import CKernels

/// CRC-32C of a buffer, continuing from `crc` (0 to start).
@inlinable
public func crc32c(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
    guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
    return blip2_crc32c(crc, base, bytes.count)
}

public func crc32c<C: ContiguousBytes>(_ bytes: C, continuing crc: UInt32 = 0) -> UInt32 {
    bytes.withUnsafeBytes { crc32c($0, continuing: crc) }
}
