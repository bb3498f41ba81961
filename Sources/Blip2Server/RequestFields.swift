import Blip2Core
import Blip2Generation
import Blip2Pipeline
import Foundation

// MARK: - Request bodies: JSON or multipart/form-data, read into one set of fields
//
// The same names in both: `image` (a file part, or in JSON base64 / a data: URL), `prompt`, `question`,
// `session_id`, `stream`, and the generation options named as the CLI's flags (`max_new_tokens`, `beams`,
// `sample`, `top_p`...).

struct RequestFields {
    private(set) var values: [String: JSONValue] = [:]
    private(set) var image: Data?
    /// The JSON body as sent, for the one number a double cannot hold (`seed`).
    private(set) var json: Data?

    static let maxParts = 64
    static let maxBeams = 8

    init(values: [String: JSONValue], image: Data?, json: Data? = nil) {
        self.values = values
        self.image = image
        self.json = json
    }

    /// Parses a body by its Content-Type.
    init(body: Data, contentType: String?) throws {
        let type = contentType?.lowercased() ?? ""
        if type.hasPrefix("multipart/form-data") {
            guard let boundary = Multipart.boundary(contentType: contentType ?? "") else {
                throw APIError.badRequest("multipart/form-data without a boundary parameter in Content-Type")
            }
            for part in try Multipart.parse(body, boundary: boundary, maxParts: Self.maxParts) {
                if part.name == "image" {
                    image = part.data
                } else {
                    values[part.name] = .string(String(decoding: part.data, as: UTF8.self))
                }
            }
        } else if type.hasPrefix("application/json") || type.isEmpty {
            guard !body.isEmpty else { throw APIError.badRequest("the request body is empty; send a JSON object") }
            guard case .object(let object) = try Self.decodeJSON(body) else {
                throw APIError.badRequest("the request body must be a JSON object")
            }
            values = object
            json = body
            if let value = object["image"] {
                guard case .string(let text) = value else {
                    throw APIError.badRequest("image: expected a string (base64 or a data: URL)", param: "image")
                }
                image = try Self.imageBytes(text, field: "image")
            }
        } else {
            throw APIError.badRequest("unsupported Content-Type \(contentType ?? ""): send application/json or multipart/form-data")
        }
    }

    static func decodeJSON(_ body: Data) throws -> JSONValue {
        do { return try JSONDecoder().decode(JSONValue.self, from: body) } catch {
            if let problem = JSONSyntax.firstProblem(in: [UInt8](body)) {
                throw APIError.badRequest("the request body is not valid JSON: \(problem.description)")
            }
            if String(validating: body, as: UTF8.self) == nil {
                throw APIError.badRequest("the request body is not valid JSON: it is not UTF-8 text")
            }
            throw APIError.badRequest("the request body is not valid JSON")
        }
    }

    /// Image bytes from base64 or a `data:` URL; http(s) URLs are refused since the server never goes online.
    static func imageBytes(_ text: String, field: String) throws -> Data {
        let lower = text.prefix(8).lowercased()
        if lower.hasPrefix("http://") || lower.hasPrefix("https://") {
            throw APIError.badRequest("\(field): http(s) image URLs are not fetched (the server works offline); send the image as a data: URL or base64",
                                      param: field, code: "remote_image_refused")
        }
        var payload = Substring(text)
        if lower.hasPrefix("data:") {
            guard let comma = text.firstIndex(of: ",") else {
                throw APIError.badRequest("\(field): a data: URL needs a comma before its data", param: field, code: "invalid_image")
            }
            let header = text[..<comma].lowercased()
            guard header.hasSuffix(";base64") else {
                throw APIError.badRequest("\(field): only base64 data: URLs are accepted (data:image/png;base64,...)", param: field, code: "invalid_image")
            }
            payload = text[text.index(after: comma)...]
        }
        guard let data = Data(base64Encoded: String(payload), options: .ignoreUnknownCharacters), !data.isEmpty else {
            throw APIError.badRequest("\(field): not valid base64 image data", param: field, code: "invalid_image")
        }
        return data
    }

    // MARK: Typed access; text parts of a multipart body arrive as strings and are parsed here

    func string(_ name: String) throws -> String? {
        switch values[name] {
        case nil, .null: return nil
        case .string(let s): return s
        default: throw APIError.badRequest("\(name): expected a string", param: name)
        }
    }

    func int(_ name: String) throws -> Int? {
        switch values[name] {
        case nil, .null: return nil
        case .number(let n) where n == n.rounded() && abs(n) < 1e15: return Int(n)
        case .string(let s) where Int(s.trimmingCharacters(in: .whitespaces)) != nil:
            return Int(s.trimmingCharacters(in: .whitespaces))
        default: throw APIError.badRequest("\(name): expected an integer", param: name)
        }
    }

    func double(_ name: String) throws -> Double? {
        switch values[name] {
        case nil, .null: return nil
        case .number(let n): return n
        case .string(let s) where Double(s.trimmingCharacters(in: .whitespaces)) != nil:
            return Double(s.trimmingCharacters(in: .whitespaces))
        default: throw APIError.badRequest("\(name): expected a number", param: name)
        }
    }

    func bool(_ name: String) throws -> Bool? {
        switch values[name] {
        case nil, .null: return nil
        case .bool(let b): return b
        case .string(let s) where ["true", "1", "on"].contains(s.lowercased()): return true
        case .string(let s) where ["false", "0", "off", ""].contains(s.lowercased()): return false
        default: throw APIError.badRequest("\(name): expected true or false", param: name)
        }
    }

    /// The generation options as the CLI's flags set them (one settings table for both); `task` gives the
    /// default for max_new_tokens.
    func generationOptions(for task: Blip2Task, names: FieldNames) throws -> GenerationOptions {
        var o = GenerationOptions()
        o.maxNewTokens = task.defaultMaxNewTokens
        for row in GenerationSetting.all { try read(row, into: &o) }
        try Self.validate(o, names: names)
        // One request must not hold the model for long or multiply its KV cache (each beam holds a copy).
        if o.numBeams > Self.maxBeams {
            throw APIError.badRequest("beams: at most \(Self.maxBeams) on this server (got \(o.numBeams))", param: "beams",
                                      code: "invalid_generation_option")
        }
        if o.numReturnSequences > Self.maxBeams {
            throw APIError.badRequest("num_return_sequences: at most \(Self.maxBeams) on this server (got \(o.numReturnSequences))",
                                      param: "num_return_sequences", code: "invalid_generation_option")
        }
        return o
    }

    /// Reads a setting's field, if the request has it, into `options`.
    func read(_ row: GenerationSetting, into options: inout GenerationOptions) throws {
        guard let input = try settingInput(row) else { return }
        do { try row.apply(input, to: &options) } catch {
            throw APIError.badRequest("\(row.field): expected \(error.expected), got \(error.given)", param: row.field,
                                      code: "invalid_generation_option")
        }
    }

    /// A setting's value as the table reads it. JSON numbers arrive as doubles, exact only to 2^53, so a
    /// larger seed is read again from the body as written.
    private func settingInput(_ row: GenerationSetting) throws -> SettingInput? {
        switch values[row.field] {
        case nil, .null: return nil
        case .string(let s): return .text(s)
        case .bool(let b): return .boolean(b)
        case .number(let n):
            if row.kind == .seed, n >= 0x1p53, n <= 0x1p64, let exact = try? exactSeed() { return .text(String(exact)) }
            return .number(n)
        case .array: return .unsupported(kind: "array")
        case .object: return .unsupported(kind: "object")
        }
    }

    private func exactSeed() throws -> UInt64 {
        struct Seed: Decodable { let seed: UInt64 }
        guard let json else { throw APIError.badRequest("seed: not exact") }
        return try JSONDecoder().decode(Seed.self, from: json).seed
    }

    /// Refuses fields the route does not take, naming them (a misspelt `max_tokens` would otherwise be
    /// silently ignored and the answer cut at the default).
    func refuseUnknownFields(allowed: [String], route: String) throws {
        let unknown = values.keys.filter { !allowed.contains($0) }.sorted()
        guard let first = unknown.first else { return }
        let hint = unknown.count == 1 ? closestName(to: first, among: allowed).map { " (did you mean \($0)?)" } ?? "" : ""
        throw APIError.badRequest("\(unknown.joined(separator: ", ")): \(unknown.count == 1 ? "not a field" : "not fields") of \(route)\(hint); it takes \(allowed.joined(separator: ", "))",
                                  param: first, code: "unknown_field")
    }

    /// The options' own limits, each named as the request spells the setting.
    static func validate(_ options: GenerationOptions, names: FieldNames) throws {
        do { try options.validate(naming: names.setting) } catch { throw APIError(error) }
    }
}

// MARK: - multipart/form-data (RFC 7578)

enum Multipart {
    struct Part {
        var name: String
        var filename: String?
        var data: Data
    }

    static func boundary(contentType: String) -> String? {
        for parameter in contentType.split(separator: ";").dropFirst() {
            let pair = parameter.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if pair.count == 2, pair[0].lowercased() == "boundary" {
                let value = pair[1].trimmingCharacters(in: CharacterSet(charactersIn: "\""))
                return value.isEmpty || value.count > 70 ? nil : value  // RFC 2046: 1 to 70 characters
            }
        }
        return nil
    }

    static func parse(_ body: Data, boundary: String, maxParts: Int) throws -> [Part] {
        let bytes = [UInt8](body)
        let delimiter = Array("--\(boundary)".utf8)
        func bad(_ why: String) -> APIError { APIError.badRequest("malformed multipart body: \(why)") }
        guard var position = find(delimiter, in: bytes, from: 0) else { throw bad("no boundary line") }
        var parts: [Part] = []
        while true {
            position += delimiter.count
            if bytes.count >= position + 2, bytes[position] == UInt8(ascii: "-"), bytes[position + 1] == UInt8(ascii: "-") {
                return parts  // closing delimiter
            }
            guard let headerStart = find([13, 10], in: bytes, from: position).map({ $0 + 2 }),
                  let headerEnd = find([13, 10, 13, 10], in: bytes, from: headerStart) else { throw bad("a part has no header") }
            let headers = String(decoding: bytes[headerStart..<headerEnd], as: UTF8.self)
            let dataStart = headerEnd + 4
            guard let next = find([13, 10] + delimiter, in: bytes, from: dataStart) else { throw bad("a part is not closed by the boundary") }
            guard parts.count < maxParts else { throw bad("more than \(maxParts) parts") }
            guard let name = parameter("name", in: headers) else { throw bad("a part has no name in Content-Disposition") }
            parts.append(Part(name: name, filename: parameter("filename", in: headers), data: Data(bytes[dataStart..<next])))
            position = next + 2
        }
    }

    /// A parameter of the Content-Disposition header, e.g. name="image".
    private static func parameter(_ key: String, in headers: String) -> String? {
        for line in headers.components(separatedBy: "\r\n") where line.lowercased().hasPrefix("content-disposition:") {
            for item in line.split(separator: ";").dropFirst() {
                let pair = item.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                if pair.count == 2, pair[0].lowercased() == key {
                    return pair[1].trimmingCharacters(in: CharacterSet(charactersIn: "\""))
                }
            }
        }
        return nil
    }

    /// Knuth-Morris-Pratt: linear time, so a hostile body cannot make the search quadratic.
    private static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard !needle.isEmpty, start < haystack.count else { return nil }
        // failure[i]: length of the longest proper prefix of needle[0...i] that is also its suffix.
        var failure = [Int](repeating: 0, count: needle.count)
        var k = 0
        for i in needle.indices.dropFirst() {
            while k > 0 && needle[i] != needle[k] { k = failure[k - 1] }
            if needle[i] == needle[k] { k += 1 }
            failure[i] = k
        }
        var matched = 0
        for i in start..<haystack.count {
            while matched > 0 && haystack[i] != needle[matched] { matched = failure[matched - 1] }
            if haystack[i] == needle[matched] { matched += 1 }
            if matched == needle.count { return i - needle.count + 1 }
        }
        return nil
    }
}
