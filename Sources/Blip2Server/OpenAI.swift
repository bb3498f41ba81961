import Blip2Core
import Blip2Generation
import Foundation

// MARK: - /v1/chat/completions: OpenAI's request mapped onto BLIP-2's prompts
//
// BLIP-2 sees one image and a `Question: {q} Answer: {a}.` history. The messages carry the image as an
// `image_url` part (a data: URL); each user text is a question and the assistant message after it its
// answer. A last user message with no text asks for a caption. System messages have no place in the
// template and are ignored.

struct ChatCompletionRequest {
    var model: String?
    var image: Data
    var history: [(question: String, answer: String)]
    /// nil: caption the image.
    var question: String?
    var stream: Bool
    var includeUsage: Bool
    var maxTokens: Int?
    /// The name the token limit came under, for messages about it.
    var maxTokensField = "max_tokens"
    var temperature: Double?
    var topP: Double?
    var seed: UInt64?
    /// Choices to return: independent samples, decoded together in the same steps.
    var n = 1

    init(body: Data) throws {
        guard case .object(let object) = try RequestFields.decodeJSON(body) else {
            throw APIError.badRequest("the request body must be a JSON object")
        }
        let fields = RequestFields(values: object, image: nil, json: body)
        model = try fields.string("model")
        stream = try fields.bool("stream") ?? false
        if case .object(let options)? = object["stream_options"], case .bool(let include)? = options["include_usage"] {
            includeUsage = include
        } else {
            includeUsage = false
        }
        // OpenAI's newer name first, as its clients send it.
        if let limit = try fields.int("max_completion_tokens") {
            maxTokens = limit
            maxTokensField = "max_completion_tokens"
        } else {
            maxTokens = try fields.int("max_tokens")
        }
        // OpenAI's ranges, whether or not the value is used (top_p is, only when sampling).
        temperature = try fields.double("temperature")
        if let temperature, !(0...2).contains(temperature) {
            throw APIError.badRequest("temperature = \(temperature): it must be from 0 (greedy) to 2", param: "temperature", code: "invalid_generation_option")
        }
        topP = try fields.double("top_p")
        if let topP, !(0...1).contains(topP) {
            throw APIError.badRequest("top_p = \(topP): it must be from 0 to 1", param: "top_p", code: "invalid_generation_option")
        }
        var seeded = GenerationOptions()
        if object["seed"] != nil {
            try fields.read(.seed, into: &seeded)
            seed = seeded.seed
        }
        if let n = try fields.int("n") {
            guard (1...16).contains(n) else { throw APIError.badRequest("n = \(n): it must be from 1 to 16", param: "n") }
            if n > 1 && !(temperature.map { $0 > 0 } ?? false) {
                throw APIError.badRequest("n = \(n): several choices need sampling (temperature above 0); at temperature 0 every choice would be the same answer", param: "n")
            }
            if n > 1 && stream {
                throw APIError.badRequest("n = \(n): several choices are answered whole; leave out stream or ask for n = 1", param: "n")
            }
            self.n = n
        }

        guard case .array(let messages)? = object["messages"], !messages.isEmpty else {
            throw APIError.badRequest("messages: expected a non-empty array", param: "messages")
        }
        var imageURL: String?
        var turns: [(role: String, text: String)] = []
        for (index, message) in messages.enumerated() {
            let where_ = "messages[\(index)]"
            guard case .object(let m) = message, case .string(let role)? = m["role"] else {
                throw APIError.badRequest("\(where_): expected an object with a role", param: "messages")
            }
            var texts: [String] = []
            switch m["content"] {
            case .string(let text)?:
                texts.append(text)
            case .array(let parts)?:
                for part in parts {
                    guard case .object(let p) = part, case .string(let type)? = p["type"] else {
                        throw APIError.badRequest("\(where_).content: each part needs a type", param: "messages")
                    }
                    switch type {
                    case "text":
                        guard case .string(let text)? = p["text"] else {
                            throw APIError.badRequest("\(where_).content: a text part needs text", param: "messages")
                        }
                        texts.append(text)
                    case "image_url":
                        var url: String?
                        if case .object(let i)? = p["image_url"], case .string(let u)? = i["url"] { url = u }
                        if case .string(let u)? = p["image_url"] { url = u }
                        guard let url else {
                            throw APIError.badRequest("\(where_).content: image_url needs a url", param: "messages")
                        }
                        guard role == "user" else {
                            throw APIError.badRequest("\(where_): images belong in user messages", param: "messages")
                        }
                        if let imageURL, imageURL != url {
                            throw APIError.badRequest("\(where_): BLIP-2 looks at one image per conversation; this is a second one", param: "messages")
                        }
                        imageURL = url
                    default:
                        throw APIError.badRequest("\(where_).content: unsupported part type \(type)", param: "messages")
                    }
                }
            case nil, .null?:
                break
            default:
                throw APIError.badRequest("\(where_).content: expected a string or an array of parts", param: "messages")
            }
            let text = texts.joined(separator: " ").trimmingCharacters(in: .whitespacesAndNewlines)
            switch role {
            case "system", "developer": continue
            case "user", "assistant": turns.append((role, text))
            default: throw APIError.badRequest("\(where_): unsupported role \(role)", param: "messages")
            }
        }
        guard let imageURL else {
            throw APIError.badRequest("messages: no image; add an image_url part with a data: URL to a user message", param: "messages")
        }
        image = try RequestFields.imageBytes(imageURL, field: "image_url")
        guard let last = turns.last, last.role == "user" else {
            throw APIError.badRequest("messages: the last message must be the user's", param: "messages")
        }
        // Earlier user texts pair with the assistant answer that follows them.
        history = []
        var pending: String?
        for turn in turns.dropLast() {
            if turn.role == "user" {
                if let pending, !pending.isEmpty { history.append((pending, "")) }
                pending = turn.text
            } else {
                if let question = pending, !question.isEmpty { history.append((question, turn.text)) }
                pending = nil
            }
        }
        if let pending, !pending.isEmpty { history.append((pending, "")) }
        question = last.text.isEmpty ? nil : last.text
        if question == nil, !history.isEmpty {
            throw APIError.badRequest("messages: the last user message has no text; ask a question about the image", param: "messages")
        }
    }
}

struct ChatCompletion: Encodable {
    struct Choice: Encodable {
        struct Message: Encodable {
            var role = "assistant"
            var content: String
        }
        var index = 0
        var message: Message
        var finishReason: String
        enum CodingKeys: String, CodingKey { case index, message, finishReason = "finish_reason" }
    }
    var id: String
    var object = "chat.completion"
    var created: Int
    var model: String
    var choices: [Choice]
    var usage: Usage
}

struct Usage: Encodable {
    var promptTokens: Int
    var completionTokens: Int
    var totalTokens: Int { promptTokens + completionTokens }
    enum CodingKeys: String, CodingKey { case promptTokens = "prompt_tokens", completionTokens = "completion_tokens", totalTokens = "total_tokens" }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(promptTokens, forKey: .promptTokens)
        try c.encode(completionTokens, forKey: .completionTokens)
        try c.encode(totalTokens, forKey: .totalTokens)
    }
}

struct ChatCompletionChunk: Encodable {
    struct Choice: Encodable {
        struct Delta: Encodable {
            var role: String?
            var content: String?
        }
        var index = 0
        var delta: Delta
        var finishReason: String?
        enum CodingKeys: String, CodingKey { case index, delta, finishReason = "finish_reason" }
        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(index, forKey: .index)
            try c.encode(delta, forKey: .delta)
            try c.encode(finishReason, forKey: .finishReason)  // null until the last chunk, as OpenAI sends it
        }
    }
    var id: String
    var object = "chat.completion.chunk"
    var created: Int
    var model: String
    var choices: [Choice]
    var usage: Usage?
}
