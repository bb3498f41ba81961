import Blip2Core
import Foundation
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Importance matrix (docs/FORMAT.md, "Importance matrix files")
//
// For every linear weight, how strongly the model drives each of its input columns on calibration data:
// the mean of x² over every token that went through the product. `blip2 imatrix` writes it; the
// converter's weighted fit reads it, so a block's error is paid where the activations are large.
//
//   [magic "BLIP2IMX"] [u32 version] [u32 entry count] [u32 metadata length] [metadata JSON]
//   entries: [u16 name length] [name, UTF-8] [u32 columns] [u64 tokens] [columns × f32 mean of x²]
//   [u32 CRC-32C of every byte before it]
//
// All integers little-endian. Every length is checked against the bytes left before anything is read
// or allocated by it, so a hostile file costs at most its own size.

public struct ImportanceMatrix: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        /// The mean of x² per input column, over `tokens` rows of input.
        public var values: [Float]
        /// How many input rows (tokens) the means were taken over.
        public var tokens: Int
        public init(values: [Float], tokens: Int) {
            self.values = values
            self.tokens = tokens
        }
    }

    /// Keyed by the linear weight's Hugging Face key, e.g. `language_model.model.decoder.layers.0.fc1.weight`.
    public var entries: [String: Entry]
    /// Where the numbers came from: the model file, the calibration images and prompts.
    public var source: Source

    /// What was run to gather the matrix (stored as the file's metadata JSON; unknown keys are ignored).
    public struct Source: Codable, Sendable, Equatable {
        /// The model file the activations were taken from (its file name).
        public var model: String
        /// How many calibration images were run.
        public var images: Int
        /// The prompts run on every image ("" is the caption).
        public var prompts: [String]
        /// The tool and version that wrote the file.
        public var tool: String

        public init(model: String = "", images: Int = 0, prompts: [String] = [], tool: String = "blip2 \(Blip2Version.string)") {
            self.model = model
            self.images = images
            self.prompts = prompts
            self.tool = tool
        }

        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            model = try c.decodeIfPresent(String.self, forKey: .model) ?? ""
            images = try c.decodeIfPresent(Int.self, forKey: .images) ?? 0
            prompts = try c.decodeIfPresent([String].self, forKey: .prompts) ?? []
            tool = try c.decodeIfPresent(String.self, forKey: .tool) ?? ""
        }
    }

    public static let magic: [UInt8] = Array("BLIP2IMX".utf8)
    public static let version: UInt32 = 1
    /// Far above any model's linear weights (blip2-opt-2.7b has 445), far below what would cost memory.
    public static let maxEntries = 1 << 16
    public static let maxColumns = 1 << 20
    public static let maxMetadataBytes = 1 << 20
    /// A full-size model's matrix is 5 MB (blip2-opt-2.7b: 445 weights, 1.25 million columns).
    public static let maxFileBytes = 1 << 30

    public init(entries: [String: Entry], source: Source = Source()) {
        self.entries = entries
        self.source = source
    }

    public init(entries: [String: Entry], model: String, images: Int, prompts: [String]) {
        self.init(entries: entries, source: Source(model: model, images: images, prompts: prompts))
    }

    // MARK: Reading

    /// Reads and validates a whole file: magic, version, checksum, every length against the file, names,
    /// and values (finite, not negative, taken over at least one token).
    public init(contentsOf path: String) throws {
        let data = try RegularFile.contents(path, maxBytes: Self.maxFileBytes)
        do {
            self = try data.withUnsafeBytes { try Self.decode($0) }
        } catch let violation as FormatViolation {
            throw FileError(path: path, violation.message)
        }
    }

    static func decode(_ bytes: UnsafeRawBufferPointer) throws -> ImportanceMatrix {
        guard bytes.count >= magic.count, Array(bytes[0..<magic.count]) == magic else {
            throw FormatViolation("not an importance matrix file (no BLIP2IMX magic); make one with blip2 imatrix")
        }
        var reader = ByteReader(bytes, what: "the importance matrix")
        _ = try reader.bytes(magic.count)
        let version = try reader.u32()
        guard version >= 1 else { throw FormatViolation("format version 0 is invalid (corrupt file)") }
        guard version <= Self.version else {
            throw FormatViolation("written in importance matrix format version \(version), but this build reads versions up to \(Self.version); update blip2")
        }
        guard bytes.count >= reader.position + 12 else { throw FormatViolation("truncated: the importance matrix ends early (\(bytes.count) bytes, shorter than its fixed fields)") }
        let body = bytes.count - 4
        let stored = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: body, as: UInt32.self))
        guard crc32c(UnsafeRawBufferPointer(rebasing: bytes[0..<body])) == stored else {
            throw FormatViolation("checksum mismatch: the file is truncated or corrupt")
        }
        reader = ByteReader(UnsafeRawBufferPointer(rebasing: bytes[0..<body]), what: "the importance matrix")
        _ = try reader.bytes(magic.count + 4)
        let count = Int(try reader.u32())
        guard count <= maxEntries else { throw FormatViolation("claims \(count) matrices (at most \(maxEntries))") }
        let metadataLength = Int(try reader.u32())
        guard metadataLength <= min(maxMetadataBytes, reader.remaining) else {
            throw FormatViolation("metadata length \(metadataLength) is larger than the \(reader.remaining) bytes left")
        }
        let source: Source
        do {
            source = try JSONDecoder().decode(Source.self, from: Data(try reader.bytes(metadataLength)))
        } catch let violation as FormatViolation {
            throw violation
        } catch {
            throw FormatViolation("the metadata is not a valid JSON object: \(error)")
        }

        var entries: [String: Entry] = [:]
        entries.reserveCapacity(count)
        for index in 0..<count {
            let nameLength = Int(try reader.u16())
            guard nameLength > 0, nameLength <= ModelFileFormat.maxNameBytes else {
                throw FormatViolation("matrix \(index): name length \(nameLength) is out of range")
            }
            guard let name = String(validating: try reader.bytes(nameLength), as: UTF8.self) else {
                throw FormatViolation("matrix \(index): the name is not valid UTF-8")
            }
            let columns = Int(try reader.u32())
            guard columns >= 1, columns <= maxColumns else {
                throw FormatViolation("'\(name)': \(columns) columns is out of range (1 to \(maxColumns))")
            }
            let tokens = try reader.u64()
            guard tokens >= 1, tokens <= UInt64(Int.max / 2) else {
                throw FormatViolation("'\(name)': a token count of \(tokens) is impossible (a mean needs at least one token)")
            }
            guard columns * 4 <= reader.remaining else {
                throw FormatViolation("truncated: '\(name)' needs \(columns * 4) bytes of values, \(reader.remaining) are left")
            }
            let raw = try reader.bytes(columns * 4)
            let values = (0..<columns).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
            if let bad = values.firstIndex(where: { !$0.isFinite || $0 < 0 }) {
                throw FormatViolation("'\(name)': column \(bad) holds \(values[bad]); a mean of squares is finite and not negative")
            }
            guard entries.updateValue(Entry(values: values, tokens: Int(tokens)), forKey: name) == nil else {
                throw FormatViolation("'\(name)' appears twice")
            }
        }
        guard reader.remaining == 0 else { throw FormatViolation("\(reader.remaining) bytes of trailing data after the last matrix") }
        return ImportanceMatrix(entries: entries, source: source)
    }

    // MARK: Writing

    /// The file's bytes; entries in name order, so the same matrix always gives the same file.
    public func encoded() throws -> [UInt8] {
        var out = ByteWriter()
        out.bytes(Self.magic)
        out.u32(Self.version)
        guard entries.count <= Self.maxEntries else { throw FormatViolation("\(entries.count) matrices (at most \(Self.maxEntries))") }
        out.u32(UInt32(entries.count))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let metadata = Array(try encoder.encode(source))
        guard metadata.count <= Self.maxMetadataBytes else { throw FormatViolation("the metadata is \(metadata.count) bytes (at most \(Self.maxMetadataBytes))") }
        out.u32(UInt32(metadata.count))
        out.bytes(metadata)
        for name in entries.keys.sorted() {
            let entry = entries[name]!
            let nameBytes = Array(name.utf8)
            guard !nameBytes.isEmpty, nameBytes.count <= ModelFileFormat.maxNameBytes else { throw FormatViolation("matrix name '\(name)' is empty or too long") }
            guard !entry.values.isEmpty, entry.values.count <= Self.maxColumns else { throw FormatViolation("'\(name)' has \(entry.values.count) columns") }
            guard entry.tokens >= 1 else { throw FormatViolation("'\(name)' was taken over \(entry.tokens) tokens (a mean needs at least one)") }
            if let bad = entry.values.firstIndex(where: { !$0.isFinite || $0 < 0 }) {
                throw FormatViolation("'\(name)': column \(bad) holds \(entry.values[bad]); a mean of squares is finite and not negative")
            }
            out.u16(UInt16(nameBytes.count))
            out.bytes(nameBytes)
            out.u32(UInt32(entry.values.count))
            out.u64(UInt64(entry.tokens))
            for value in entry.values { out.u32(value.bitPattern) }
        }
        out.u32(crc32c(out.data))
        return out.data
    }

    /// Writes to a temporary file beside `path`, syncs and renames: the destination is either the old
    /// file or the whole new one, never half of it.
    public func write(to path: String) throws {
        let bytes: [UInt8]
        do { bytes = try encoded() } catch let violation as FormatViolation {
            throw FileError(path: path, "cannot write: \(violation.message)")
        }
        let temporary = ModelFileWriter.temporaryPath(for: path)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FileError(path: path, "cannot create \(temporary): \(String(cString: strerror(errno)))") }
        var failure: String?
        var done = 0
        bytes.withUnsafeBytes { buffer in
            while done < buffer.count {
                let n = Glibc.write(fd, buffer.baseAddress! + done, buffer.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = "cannot write \(temporary): \(String(cString: strerror(errno)))"
                    return
                }
                done += n
            }
        }
        if failure == nil, fsync(fd) != 0 { failure = "cannot sync \(temporary): \(String(cString: strerror(errno)))" }
        close(fd)
        if failure == nil, rename(temporary, path) != 0 {
            failure = "cannot rename \(temporary) to the destination: \(String(cString: strerror(errno)))"
        }
        if let failure {
            unlink(temporary)
            throw FileError(path: path, failure)
        }
    }

    // MARK: Checking against a model

    /// Throws a clear error if an entry names no weight in `weights` or its column count differs.
    /// `file` is the importance matrix's path, named in the error. Weights without an entry are fine
    /// (the fit weighs their inputs equally).
    public func check(against weights: [(name: String, columns: Int)], file: String) throws {
        var columns: [String: Int] = [:]
        for weight in weights { columns[weight.name] = weight.columns }
        for name in entries.keys.sorted() {
            let count = entries[name]!.values.count
            guard let expected = columns[name] else {
                let hint = source.model.isEmpty ? "" : " (it was made from \(source.model))"
                throw FileError(path: file, "'\(name)' names no linear weight of this model\(hint); was the matrix made from another model?")
            }
            guard expected == count else {
                throw FileError(path: file, "'\(name)' has \(count) columns, but the weight has \(expected) inputs; was the matrix made from another model?")
            }
        }
    }
}
