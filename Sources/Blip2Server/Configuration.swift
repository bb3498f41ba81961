import Blip2Pipeline

/// How `blip2 serve` listens and how much it holds.
public struct ServerConfiguration: Sendable {
    public var host = "127.0.0.1"
    /// 0: any free port (the URL printed at start tells which).
    public var port = 8080
    /// Generation requests that run at once, their decode steps shared (docs/SERVER.md, "Slots").
    public var parallel = 4
    /// Generation requests that may wait while every slot is taken; past it, 503 with Retry-After.
    public var queue = 8
    public var maxBodyBytes = 20 << 20
    /// When set, /v1/* and /metrics need `Authorization: Bearer KEY` (or `X-API-Key: KEY`).
    public var apiKey: String?
    /// Seconds a chat session (its encoded image and KV cache) lives after its last turn.
    public var sessionTTL = 600.0
    /// Chat sessions kept at once; the least recently used goes first.
    public var maxSessions = 16
    /// Memory the sessions' KV caches may take together (float32, 512 positions each: 335 MB apiece for
    /// OPT-2.7B), which lowers `maxSessions` for large models.
    public var sessionMemoryBytes = 1 << 30
    /// Encoded images kept by content hash; the least recently used goes first.
    public var imageCacheEntries = 32
    /// Seconds a connection may stay open with no request on it (before the first, between keep-alive
    /// requests, or in a request's head or body that stalls); a request being answered is never idle.
    public var idleTimeout = 60.0
    /// Clients following the camera's events at once (`/v1/camera/events`); past it, 503.
    public var maxCameraListeners = 32
    /// Receives one line per request (`blip2 serve` writes them to standard error unless `--quiet`).
    public var requestLog: (@Sendable (String) -> Void)?

    public init() {}
}

/// Something that keeps a caption of the latest frame of a live source, served at `GET /v1/latest` when
/// the server is given one (`--camera` serves its own there otherwise).
public protocol LatestCaptionProvider: Sendable {
    func latestCaption() async -> GenerationRecord?
}
