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

    /// The API's view of anything a request can run into.
    init(_ error: any Error) {
        switch error {
        case let error as APIError:
            self = error
        case let error as ImageError:
            self = .badRequest("image: \(error.description)", param: "image", code: Self.imageCode(error))
        case let error as PipelineError:
            // The pipeline's only per-request refusals: a prompt beyond the context, a session too long.
            self = .badRequest(error.description, param: "prompt", code: "context_length_exceeded")
        case let error as GenerationError:
            switch error {
            case .invalidOption:
                self = .badRequest(error.description, code: "invalid_generation_option")
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
