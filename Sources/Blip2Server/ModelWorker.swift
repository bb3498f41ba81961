import Foundation

// MARK: - One model, one worker thread, a bounded queue in front
//
// The model's compute is not re-entrant (one KV-cache arena, one kernel worker pool), so every generation
// runs on one dedicated thread, in arrival order. Requests beyond the queue's capacity are refused at once
// (the caller answers 503 with Retry-After) rather than piling up memory and latency.

/// Whether the request that owns a job still wants its result; read by the model between tokens.
public final class JobTicket: @unchecked Sendable {
    private let lock = NSLock()
    private var cancelled = false

    public init() {}

    private var streaming = false

    public var isCancelled: Bool { lock.withLock { cancelled } }

    public func cancel() { lock.withLock { cancelled = true } }

    /// Set once a streamed response took over: its writes, not the request's inbound side (which the
    /// framework stops watching then), tell whether the client is still there.
    var isStreaming: Bool {
        get { lock.withLock { streaming } }
        set { lock.withLock { streaming = newValue } }
    }
}

enum WorkerError: Error {
    /// The queue holds `waiting` jobs already; `retryAfter` seconds is the estimated wait.
    case queueFull(waiting: Int, retryAfter: Int)
    /// The server is shutting down and takes no more work.
    case shuttingDown
}

final class ModelWorker: @unchecked Sendable {
    private struct Entry {
        let ticket: JobTicket
        let run: () -> Void
        let refuse: (any Error) -> Void
    }

    /// Jobs that may wait while one runs.
    let capacity: Int
    private let condition = NSCondition()
    private var waiting: [Entry] = []
    private var busy = false
    private var accepting = true
    private var stopped = false
    private var thread: Thread?
    /// Exponentially weighted mean of job durations (seconds), for Retry-After.
    private var meanJobSeconds = 1.0
    /// Called with the number of waiting jobs whenever it changes.
    var onDepthChange: (@Sendable (Int) -> Void)?

    init(capacity: Int) {
        self.capacity = capacity
    }

    func start() {
        let thread = Thread { [self] in loop() }
        // The model's forward passes recurse little but keep sizeable structs on the stack.
        thread.stackSize = 16 << 20
        thread.name = "blip2-model"
        self.thread = thread
        thread.start()
    }

    var depth: Int { condition.withLock { waiting.count } }

    /// Queues `run` for the model thread. Throws `WorkerError.queueFull` at once when the queue is full and
    /// `WorkerError.shuttingDown` once draining began; otherwise exactly one of `run` (on the model thread)
    /// and `refuse` (the job was cancelled before it started, or the server is shutting down) is called.
    func submit(_ ticket: JobTicket, run: @escaping @Sendable () -> Void,
                refuse: @escaping @Sendable (any Error) -> Void) throws {
        condition.lock()
        defer { condition.unlock() }
        guard accepting else { throw WorkerError.shuttingDown }
        // A job may always start when the model is idle, even with `--queue 0`.
        guard waiting.count < capacity || (!busy && waiting.isEmpty) else {
            let retry = max(1, Int((Double(waiting.count + 1) * meanJobSeconds).rounded(.up)))
            throw WorkerError.queueFull(waiting: waiting.count, retryAfter: retry)
        }
        waiting.append(Entry(ticket: ticket, run: run, refuse: refuse))
        onDepthChange?(waiting.count)
        condition.signal()
    }

    /// Runs `body` on the model thread and returns its result; cancelling the task cancels the job (a
    /// waiting job leaves the queue, a running one sees `ticket.isCancelled`).
    func run<T: Sendable>(_ ticket: JobTicket, _ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                do {
                    try submit(ticket, run: { continuation.resume(with: Result { try body() }) },
                               refuse: { continuation.resume(throwing: $0) })
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        } onCancel: {
            cancel(ticket)
        }
    }

    /// Marks the job cancelled; if it is still waiting, it leaves the queue and is refused.
    func cancel(_ ticket: JobTicket) {
        ticket.cancel()
        condition.lock()
        let index = waiting.firstIndex { $0.ticket === ticket }
        let entry = index.map { waiting.remove(at: $0) }
        if entry != nil { onDepthChange?(waiting.count) }
        condition.unlock()
        entry?.refuse(CancellationError())
    }

    /// Stops taking work and refuses every waiting job; the running one finishes.
    func drain() {
        condition.lock()
        accepting = false
        let refused = waiting
        waiting.removeAll()
        onDepthChange?(0)
        condition.unlock()
        for entry in refused { entry.refuse(WorkerError.shuttingDown) }
    }

    /// Waits for the running job, then ends the thread.
    func stop() {
        drain()
        condition.lock()
        stopped = true
        condition.broadcast()
        while busy { condition.wait() }
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while waiting.isEmpty && !stopped { condition.wait() }
            if waiting.isEmpty && stopped {
                condition.unlock()
                return
            }
            let entry = waiting.removeFirst()
            onDepthChange?(waiting.count)
            busy = true
            condition.unlock()

            let start = DispatchTime.now().uptimeNanoseconds
            if entry.ticket.isCancelled { entry.refuse(CancellationError()) } else { entry.run() }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9

            condition.lock()
            busy = false
            meanJobSeconds = 0.8 * meanJobSeconds + 0.2 * seconds
            condition.broadcast()
            condition.unlock()
        }
    }
}
