import ArgumentParser
import Blip2CommandLine
import Blip2Image
import Blip2Pipeline
import Blip2Server
import Foundation

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the kiosk page and an HTTP API (OpenAI-compatible chat completions included) over one loaded model.",
        discussion: """
        Loads the model once, prints the URL and serves until SIGINT or SIGTERM, then finishes the running generation, refuses what was queued and exits 0. Binds to loopback unless --host says otherwise.

        Routes: GET / (the page), /health, /metrics, /v1/models; POST /v1/caption, /v1/ask, /v1/chat, /v1/chat/completions (docs/SERVER.md).

        Examples:
          blip2 serve model.blip2
          blip2 serve model.blip2 --host 0.0.0.0 --port 8080 --api-key "$KEY"
        """
    )

    @Argument(help: "A model file written by blip2-quantize.")
    var model: String

    @Option(name: .long, help: "Address to listen on (0.0.0.0: every interface).")
    var host = "127.0.0.1"

    @Option(name: .long, help: "Port to listen on (0: any free port).")
    var port = 8080

    @Option(name: .long, help: "Worker threads for the model (default: all cores).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    @Option(name: .long, help: "Generation requests that may wait while one runs; past it the answer is 503 with Retry-After.")
    var queue = ServerConfiguration().queue

    @Option(name: .customLong("max-body-mb"), help: "Largest request body in MiB; larger ones get 413.")
    var maxBodyMB = ServerConfiguration().maxBodyBytes >> 20

    @Option(name: .customLong("api-key"), help: "Require this key on /v1/* and /metrics (Authorization: Bearer KEY).")
    var apiKey: String?

    @Option(name: .customLong("session-ttl"), help: "Seconds a chat conversation is kept after its last turn.")
    var sessionTTL = ServerConfiguration().sessionTTL

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0...65535") }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        guard queue >= 0 else { throw ValidationError("--queue must be 0 or more") }
        guard (1...4096).contains(maxBodyMB) else { throw ValidationError("--max-body-mb must be 1...4096") }
        guard sessionTTL > 0, sessionTTL.isFinite else { throw ValidationError("--session-ttl must be a positive number of seconds") }
        if let apiKey, apiKey.isEmpty { throw ValidationError("--api-key must not be empty") }
    }

    func run() async throws {
        let compute = try makeComputeContext(threads: threads)
        let pipeline: Blip2Pipeline
        do {
            pipeline = try Blip2Pipeline(modelPath: model, compute: compute)
        } catch {
            printError("error: \(error)")
            throw ExitCode.failure
        }
        var configuration = ServerConfiguration()
        configuration.host = host
        configuration.port = port
        configuration.queue = queue
        configuration.maxBodyBytes = maxBodyMB << 20
        configuration.apiKey = apiKey
        configuration.sessionTTL = sessionTTL
        let server = Blip2Server(pipeline: pipeline, modelPath: model, configuration: configuration)
        let name = "\(server.modelName), \(server.precision)"
        do {
            try await server.run { url in
                print("blip2 serve: \(name) at \(url)")
                fflush(stdout)
            }
        } catch {
            printError("error: cannot serve on \(host):\(port): \(error)")
            throw ExitCode.failure
        }
        printError("blip2 serve: stopped")
    }
}
