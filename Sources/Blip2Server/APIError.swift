import Blip2Generation
import Blip2Image
import Blip2Pipeline
import Foundation
import HTTPTypes

// MARK: - Errors as the API reports them
//
// One shape for every route, OpenAI's: {"error": {"message", "type", "param", "code"}}, so OpenAI clients
// show the message and the page can tell a bad image from a busy server.

struct APIError: Error {
    var status: HTTPResponse.Status
    var message: String
    var type: String
    var param: String?
    var code: String?
    var retryAfter: Int?
    /// A 405's `Allow` header: the methods the path takes.
    var allow: String?

    init(status: HTTPResponse.Status, message: String, type: String, param: String? = nil, code: String? = nil, retryAfter: Int? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retryAfter = retryAfter
    }

    static func badRequest(_ message: String, param: String? = nil, code: String = "invalid_request") -> APIError {
        APIError(status: .badRequest, message: message, type: "invalid_request_error", param: param, code: code)
    }

    static let keyRequired = APIError(status: .unauthorized, message: "a valid API key is required: send Authorization: Bearer KEY",
                                      type: "authentication_error", code: "invalid_api_key")

    /// The API's view of anything a request can run into.
    init(_ error: any Error) {
        switch error {
        case let error as APIError:
            self = error
        case let error as ImageError:
            self = APIError(image: error, field: "image")
        case let error as PipelineError:
            // The pipeline's only per-request refusals: a prompt beyond the context, a session too long.
            if let overflow = error.overflow {
                self = APIError(overflow: overflow, names: .native(prompt: "prompt"))
            } else {
                self = .badRequest(error.description, param: "prompt", code: "context_length_exceeded")
            }
        case let error as GenerationError:
            switch error {
            case .invalidOption(let name, _, _):
                self = .badRequest(error.description, param: name, code: "invalid_generation_option")
            case .cancelled:
                self = APIError(status: .serviceUnavailable, message: "the request was cancelled", type: "cancelled")
            default:
                self = APIError(status: .internalServerError, message: error.description, type: "server_error")
            }
        case let WorkerError.queueFull(waiting, retryAfter):
            self = APIError(status: .serviceUnavailable,
                            message: "the server is busy (\(waiting) requests waiting for the model); retry in \(retryAfter) s",
                            type: "server_busy", code: "queue_full", retryAfter: retryAfter)
        case WorkerError.shuttingDown:
            self = APIError(status: .serviceUnavailable, message: "the server is shutting down", type: "server_busy",
                            code: "shutting_down", retryAfter: 5)
        case is CancellationError:
            self = APIError(status: .serviceUnavailable, message: "the request was cancelled", type: "cancelled")
        default:
            self = APIError(status: .internalServerError, message: "\(error)", type: "server_error")
        }
    }

    /// An upload that cannot be read; the decoder was given the field's name, so its message starts with it.
    init(image error: ImageError, field: String) {
        let message: String
        switch error {
        case let .tooManyPixels(_, width, height, limit):
            message = "\(field): the image declares \(width)x\(height) = \(width * height) pixels, over this server's limit of \(limit); send a smaller image"
        case let .fileTooLarge(_, bytes, limit):
            message = "\(field): the image has \(bytes) bytes, over this server's limit of \(limit); send a smaller image"
        default:
            message = error.description
        }
        self = .badRequest(message, param: field, code: Self.imageCode(error))
    }

    /// A prompt and max-new-tokens that do not fit the context, blamed on the prompt when not even one new
    /// token fits after it, on the token limit otherwise.
    init(overflow o: ContextOverflow, names: FieldNames) {
        let inputs = o.imageTokens + o.promptTokens
        if o.promptFits {
            self = .badRequest("\(names.maxNewTokens) = \(o.maxNewTokens): after the \(o.promptTokens)-token prompt and \(o.imageTokens) image embeddings, at most \(o.contextLimit - inputs) new tokens fit the \(o.contextLimit)-token context",
                               param: names.maxNewTokens, code: "context_length_exceeded")
        } else {
            self = .badRequest("\(names.prompt): the prompt is \(o.promptTokens) tokens; with \(o.imageTokens) image embeddings that is \(inputs), and not one new token fits the \(o.contextLimit)-token context: shorten it",
                               param: names.prompt, code: "context_length_exceeded")
        }
    }

    private static func imageCode(_ error: ImageError) -> String {
        switch error {
        case .tooManyPixels: return "image_too_large"
        case .fileTooLarge: return "image_too_large"
        case .unrecognizedFormat, .unsupportedFormat: return "not_an_image"
        default: return "invalid_image"
        }
    }

    struct Body: Encodable {
        struct Detail: Encodable {
            let message: String
            let type: String
            let param: String?
            let code: String?
        }
        let error: Detail
    }

    var body: Body { Body(error: .init(message: message, type: type, param: param, code: code)) }
}

/// How a request names what an error is about: the native routes' fields (the CLI's flags in snake case) or
/// OpenAI's.
struct FieldNames: Sendable {
    /// The field whose text becomes the prompt: `prompt`, `question` or `messages`.
    var prompt: String
    /// `max_new_tokens`, or OpenAI's `max_tokens` / `max_completion_tokens` as the request sent it.
    var maxNewTokens: String
    var image: String
    var openAI: Bool

    static func native(prompt: String) -> FieldNames {
        FieldNames(prompt: prompt, maxNewTokens: "max_new_tokens", image: "image", openAI: false)
    }

    static func openAI(maxTokens: String) -> FieldNames {
        FieldNames(prompt: "messages", maxNewTokens: maxTokens, image: "image_url", openAI: true)
    }

    /// A generation setting as the request names it: the settings table's field, but for the token limit
    /// as sent and OpenAI's sampling switch.
    func setting(_ setting: GenerationOptions.Setting) -> String {
        switch setting {
        case .maxNewTokens: return maxNewTokens
        // OpenAI turns sampling on with a temperature above 0.
        case .doSample where openAI: return "temperature"
        default: return GenerationSetting.row(setting)?.field ?? "the model's \(setting == .eosTokenId ? "eos_token_id" : "pad_token_id")"
        }
    }
}
