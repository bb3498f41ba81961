import Foundation

// MARK: - NumPy .npy files (format version 1.0), float32 little-endian, C order
//
// `--dump-logits` and `blip2 preprocess` write them; tests read the reference outputs with the same code.

public enum Numpy {
    public struct Error: Swift.Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    /// The bytes of a .npy file holding `values` with `shape`.
    public static func encode(_ values: [Float], shape: [Int]) -> Data {
        precondition(shape.reduce(1, *) == values.count, "shape must match the value count")
        let dims = shape.map(String.init).joined(separator: ", ") + (shape.count == 1 ? "," : "")
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(dims)), }"
        // Magic (6) + version (2) + length (2) + header, padded with spaces to a multiple of 64, newline last.
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var data = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
        let length = UInt16(header.utf8.count)
        data.append(contentsOf: [UInt8(length & 0xff), UInt8(length >> 8)])
        data.append(contentsOf: Array(header.utf8))
        values.withUnsafeBytes { raw in
            var littleEndian = [UInt8](raw)
            if UInt32(1).bigEndian == 1 {   // big-endian host: swap each float
                for i in stride(from: 0, to: littleEndian.count, by: 4) { littleEndian[i..<(i + 4)].reverse() }
            }
            data.append(contentsOf: littleEndian)
        }
        return data
    }

    /// Writes atomically: a temporary file beside `url`, renamed when complete.
    public static func write(_ values: [Float], shape: [Int], to url: URL) throws {
        do { try encode(values, shape: shape).write(to: url, options: .atomic) } catch {
            let underlying = (error as NSError).userInfo[NSUnderlyingErrorKey] as? NSError
            let reason = underlying?.domain == NSPOSIXErrorDomain ? String(cString: strerror(Int32(underlying!.code))) : error.localizedDescription
            throw Error(message: "\(url.path): cannot write (\(reason))")
        }
    }

    /// Reads a float32 (or float64, converted) .npy file in C order.
    public static func read(_ url: URL) throws -> (values: [Float], shape: [Int]) {
        let data = try Data(contentsOf: url)
        let bytes = [UInt8](data)
        guard bytes.count >= 10, bytes[0] == 0x93, Array(bytes[1..<6]) == Array("NUMPY".utf8) else {
            throw Error(message: "\(url.path): not a .npy file")
        }
        let major = bytes[6]
        let headerLength: Int, headerStart: Int
        if major == 1 {
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        } else {
            guard bytes.count >= 12 else { throw Error(message: "\(url.path): truncated header") }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        }
        guard headerStart + headerLength <= bytes.count else { throw Error(message: "\(url.path): truncated header") }
        let header = String(decoding: bytes[headerStart..<(headerStart + headerLength)], as: UTF8.self)
        guard !header.contains("'fortran_order': True") else { throw Error(message: "\(url.path): Fortran order is not supported") }
        let width: Int
        if header.contains("'<f4'") { width = 4 } else if header.contains("'<f8'") { width = 8 } else {
            throw Error(message: "\(url.path): only little-endian float32/float64 arrays are read")
        }
        guard let open = header.range(of: "'shape': ("), let close = header[open.upperBound...].firstIndex(of: ")") else {
            throw Error(message: "\(url.path): no shape in the header")
        }
        let shape = header[open.upperBound..<close].split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        let count = shape.reduce(1, *)
        let start = headerStart + headerLength
        guard bytes.count - start == count * width else { throw Error(message: "\(url.path): \(bytes.count - start) data bytes for shape \(shape)") }
        let values: [Float] = bytes[start...].withUnsafeBytes { raw in
            width == 4 ? (0..<count).map { raw.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self) }
                       : (0..<count).map { Float(raw.loadUnaligned(fromByteOffset: $0 * 8, as: Double.self)) }
        }
        return (values, shape)
    }
}
