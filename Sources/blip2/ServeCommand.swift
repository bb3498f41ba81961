import ArgumentParser
import Blip2CommandLine
import Blip2Image
import Blip2Pipeline
import Blip2Server
import Blip2Watch
import Foundation

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the kiosk page and an HTTP API (OpenAI-compatible chat completions included) over one loaded model.",
        discussion: """
        Loads the model once, prints the URL and serves until SIGINT or SIGTERM, then finishes the running generation, refuses what was queued and exits 0. Binds to loopback unless --host says otherwise.

        Routes: GET / (the page), /health, /metrics, /v1/models; POST /v1/caption, /v1/ask, /v1/chat, /v1/chat/completions (docs/SERVER.md).

        With --camera SOURCE (the SOURCE forms of blip2 watch: -, an http:// URL, a folder, an MJPEG file), the page shows the camera's newest frame and its latest caption, pushed as they come; GET /v1/camera/latest answers the latest caption as JSON, /v1/camera/latest.jpg and /v1/camera/frame.jpg the captioned and the newest frame, /v1/camera/events streams them. The camera shares the one model: it captions whenever no request waits, always the newest frame.

        Examples:
          blip2 serve model.blip2
          blip2 serve model.blip2 --host 0.0.0.0 --port 8080 --api-key "$KEY"
          rpicam-vid -t 0 -n --codec mjpeg -o - \\
            | blip2 serve model.blip2 --camera - --camera-every 10
        """
    )

    @Argument(help: "A model file written by blip2-quantize.")
    var model: String

    @Option(name: .long, help: "Address to listen on (0.0.0.0: every interface).")
    var host = "127.0.0.1"

    @Option(name: .long, parsing: .unconditional, help: "Port to listen on (0: any free port).")
    var port = 8080

    @Option(name: [.customShort("t"), .long], parsing: .unconditional, help: "Worker threads for the model (default: one per core).")
    var threads: Int?

    @Option(name: .long, parsing: .unconditional, help: "Generation requests that run at once, sharing each decode step (the weights read once for all of them).")
    var parallel = ServerConfiguration().parallel

    @Option(name: .long, parsing: .unconditional, help: "Generation requests that may wait while every --parallel slot is taken; past it the answer is 503 with Retry-After.")
    var queue = ServerConfiguration().queue

    @Option(name: .customLong("max-body-mb"), parsing: .unconditional, help: "Largest request body in MiB; larger ones get 413.")
    var maxBodyMB = ServerConfiguration().maxBodyBytes >> 20

    @Option(name: .customLong("api-key"), help: "Require this key on /v1/* and /metrics (Authorization: Bearer KEY).")
    var apiKey: String?

    @Option(name: .customLong("session-ttl"), parsing: .unconditional, help: ArgumentHelp("Seconds a chat conversation is kept after its last turn.", valueName: "seconds"))
    var sessionTTL = ServerConfiguration().sessionTTL

    @Option(name: .customLong("idle-timeout"), parsing: .unconditional, help: ArgumentHelp("Close a connection after this many seconds without a request on it (an answer being prepared or streamed does not count as idle).", valueName: "seconds"))
    var idleTimeout = ServerConfiguration().idleTimeout

    @Flag(name: .long, help: "No request log (one line per request on standard error: time, method, path, status, ms).")
    var quiet = false

    @Option(name: .long, help: ArgumentHelp("Caption this camera feed beside the requests: -, an http:// URL, a folder, or an MJPEG file (as blip2 watch).", valueName: "source"))
    var camera: String?

    @Option(name: .customLong("camera-every"), parsing: .unconditional, help: ArgumentHelp("Least time between camera captions, in seconds.", valueName: "seconds"))
    var cameraEvery: Double?

    @Option(name: .customLong("camera-min-change"), parsing: .unconditional, help: ArgumentHelp("Skip camera frames that differ from the last captioned one by less than this (0-1, as blip2 watch --min-change; default \(WatchOptions().minChange)).", valueName: "x"))
    var cameraMinChange: Double?

    @Option(name: .customLong("camera-ask"), help: ArgumentHelp("A question to answer about every captioned camera frame (repeatable).", valueName: "question"))
    var cameraQuestions: [String] = []

    func validate() throws {
        guard (0...65535).contains(port) else { throw invalidValue("--port", port, mustBe: "between 0 and 65535") }
        if let threads, threads < 1 { throw invalidValue("--threads", threads, mustBe: "at least 1") }
        guard queue >= 0 else { throw invalidValue("--queue", queue, mustBe: "0 or more") }
        guard (1...64).contains(parallel) else { throw invalidValue("--parallel", parallel, mustBe: "from 1 to 64") }
        guard (1...4096).contains(maxBodyMB) else { throw invalidValue("--max-body-mb", maxBodyMB, mustBe: "between 1 and 4096") }
        guard sessionTTL > 0, sessionTTL.isFinite else { throw invalidValue("--session-ttl", sessionTTL, mustBe: "a positive number of seconds") }
        guard idleTimeout > 0, idleTimeout <= 86_400 else { throw invalidValue("--idle-timeout", idleTimeout, mustBe: "more than 0 and at most 86400 seconds") }
        if let apiKey, apiKey.isEmpty { throw invalidValue("--api-key", "''", mustBe: "a key of at least one character") }
        if camera == nil {
            for (flag, given) in [("--camera-every", cameraEvery != nil), ("--camera-min-change", cameraMinChange != nil),
                                  ("--camera-ask", !cameraQuestions.isEmpty)] where given {
                throw ValidationError("\(flag) needs --camera SOURCE")
            }
        }
        if let cameraEvery, !(cameraEvery >= 0 && cameraEvery.isFinite) { throw invalidValue("--camera-every", cameraEvery, mustBe: "0 or more seconds") }
        if let cameraMinChange, !(0...1).contains(cameraMinChange) { throw invalidValue("--camera-min-change", cameraMinChange, mustBe: "between 0 and 1") }
        for question in cameraQuestions where question.trimmingCharacters(in: .whitespaces).isEmpty {
            throw ValidationError("--camera-ask needs a question")
        }
    }

    /// The camera's source, opened (not read yet); a bad one ends the command before the model loads.
    func openCamera() throws -> FrameSource? {
        guard let camera else { return nil }
        return try openCameraSource(camera, label: "--camera", pipeline: "blip2 serve MODEL --camera -")
    }

    func run() async throws {
        let cameraSource = try openCamera()
        let compute = try makeComputeContext(threads: threads)
        let pipeline: Pipeline
        do {
            pipeline = try Pipeline(modelPath: model, compute: compute)
        } catch {
            printError("error: \(error)")
            throw ExitCode.failure
        }
        var configuration = ServerConfiguration()
        configuration.host = host
        configuration.port = port
        configuration.queue = queue
        configuration.parallel = parallel
        configuration.maxBodyBytes = maxBodyMB << 20
        configuration.apiKey = apiKey
        configuration.sessionTTL = sessionTTL
        configuration.idleTimeout = idleTimeout
        if !quiet { configuration.requestLog = { printError($0) } }
        var cameraConfiguration: CameraConfiguration?
        if let cameraSource {
            var options = WatchOptions()
            options.every = cameraEvery ?? 0
            options.minChange = cameraMinChange ?? options.minChange
            options.questions = cameraQuestions
            cameraConfiguration = CameraConfiguration(source: cameraSource, options: options, log: { printError("camera: \($0)") })
        }
        let server: ModelServer
        do {
            server = try ModelServer(pipeline: pipeline, modelPath: model, configuration: configuration, camera: cameraConfiguration)
        } catch {
            // The only check that can fail here: a --camera-ask question that does not fit the model's context.
            printError("error: --camera-ask: \(error)")
            throw ExitCode.failure
        }
        let name = "\(server.modelName), \(server.precision)"
        do {
            try await server.run { url in
                print("blip2 serve: \(name) at \(url)")
                // Every stream: stdout is a C global Swift 6 will not let a closure on another thread name.
                fflush(nil)
            }
        } catch {
            printError("error: cannot serve on \(host):\(port): \(describeStartError(error, host: host))")
            throw ExitCode.failure
        }
        printError("blip2 serve: stopped")
    }
}
