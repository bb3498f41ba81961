import Foundation

// MARK: - One model, a few generation slots, a bounded queue in front
//
// Up to `slots` generations run at once, each on a slot thread of its own, in arrival order; the pipeline's
// scheduler runs their decode steps together (the weights read once per step for all of them) and their
// image encodes and prefills one at a time between steps. Requests beyond the slots wait in the queue, and
// beyond the queue's capacity they are refused at once (the caller answers 503 with Retry-After) rather than
// piling up memory and latency. A camera's frame is a background job beside the queue: it takes a free slot
// only when no request waits, so visitors never wait for more than the one camera caption in progress.

/// Whether the request that owns a job still wants its result; read by the model between tokens.
// @unchecked Sendable: its flags are behind its lock.
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
    /// A background job is set already.
    case backgroundBusy
}

// @unchecked Sendable: its queue and state are behind its NSCondition.
final class ModelWorker: @unchecked Sendable {
    private struct Entry {
        let ticket: JobTicket
        /// Called with whether requests ran between this one's submission and its start.
        let run: (_ waited: Bool) -> Void
        let refuse: (any Error) -> Void
        /// The background job's `requestsStarted` when it was set, or -1 when a request was running then.
        let mark: Int
    }

    /// Jobs that may wait while the slots are taken.
    let capacity: Int
    /// Jobs that run at once.
    let slots: Int
    private let condition = NSCondition()
    private var waiting: [Entry] = []
    /// The one background job, taken when nothing waits in the queue.
    private var background: Entry?
    /// Requests (jobs other than the background one) started so far, and how many run now.
    private var requestsStarted = 0
    private var requestsRunning = 0
    /// Jobs running now (requests and the background job).
    private var running = 0
    private var accepting = true
    private var stopped = false
    private var threads: [Thread] = []
    private var threadsEnded = 0
    /// Exponentially weighted mean of job durations (seconds), for Retry-After.
    private var meanJobSeconds = 1.0
    /// Called with the number of waiting jobs whenever it changes.
    var onDepthChange: (@Sendable (Int) -> Void)?
    /// Called with the number of running jobs whenever it changes.
    var onRunningChange: (@Sendable (Int) -> Void)?

    init(capacity: Int, slots: Int = 1) {
        precondition(slots >= 1, "at least one slot")
        self.capacity = capacity
        self.slots = slots
    }

    func start() {
        for slot in 0..<slots {
            let thread = Thread { [self] in loop() }
            // The model's forward passes recurse little but keep sizeable structs on the stack.
            thread.stackSize = 16 << 20
            thread.name = "blip2-slot-\(slot)"
            threads.append(thread)
            thread.start()
        }
    }

    var depth: Int { condition.withLock { waiting.count } }

    /// Jobs running now.
    var active: Int { condition.withLock { running } }

    /// Why a job submitted now would be refused, if it would: checked before a request's body is read, so
    /// that a full server does not buffer an upload only to refuse it.
    func checkRoom() throws {
        if let refusal = condition.withLock({ lockedRefusal() }) { throw refusal }
    }

    private func lockedRefusal() -> WorkerError? {
        guard accepting else { return .shuttingDown }
        // A job may always start when a slot is free, even with `--queue 0`: jobs submitted but not yet taken
        // by a slot thread hold the free slots, not the queue (a slot thread can be slow to wake).
        guard waiting.count < capacity + max(0, slots - running) else {
            let retry = max(1, Int((Double(waiting.count + 1) * meanJobSeconds / Double(slots)).rounded(.up)))
            return .queueFull(waiting: waiting.count, retryAfter: retry)
        }
        return nil
    }

    /// Queues `run` for a slot thread. Throws `WorkerError.queueFull` at once when the queue is full and
    /// `WorkerError.shuttingDown` once draining began; otherwise exactly one of `run` (on a slot thread)
    /// and `refuse` (the job was cancelled before it started, or the server is shutting down) is called.
    func submit(_ ticket: JobTicket, run: @escaping @Sendable () -> Void,
                refuse: @escaping @Sendable (any Error) -> Void) throws {
        condition.lock()
        defer { condition.unlock() }
        if let refusal = lockedRefusal() { throw refusal }
        waiting.append(Entry(ticket: ticket, run: { _ in run() }, refuse: refuse, mark: 0))
        onDepthChange?(waiting.count)
        condition.signal()
    }

    /// Sets the background job: it runs on a free slot once no request waits (requests queued after it
    /// still go first), and is not counted in the queue. `run` gets whether requests ran while it waited.
    /// Throws `WorkerError.shuttingDown` once draining began, and `backgroundBusy` when one is set already
    /// (a camera has one frame in hand at a time); otherwise exactly one of `run` and `refuse` is called.
    func submitBackground(run: @escaping @Sendable (_ waited: Bool) -> Void, refuse: @escaping @Sendable (any Error) -> Void) throws {
        condition.lock()
        defer { condition.unlock() }
        guard accepting else { throw WorkerError.shuttingDown }
        guard background == nil else { throw WorkerError.backgroundBusy }
        background = Entry(ticket: JobTicket(), run: run, refuse: refuse, mark: requestsRunning > 0 ? -1 : requestsStarted)
        condition.signal()
    }

    /// Runs `body` on a slot thread and returns its result; cancelling the task cancels the job (a
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

    /// Stops taking work and refuses every waiting job; the running ones finish.
    func drain() {
        condition.lock()
        accepting = false
        let refused = waiting + (background.map { [$0] } ?? [])
        waiting.removeAll()
        background = nil
        onDepthChange?(0)
        condition.unlock()
        for entry in refused { entry.refuse(WorkerError.shuttingDown) }
    }

    /// Waits for the running jobs, then ends the slot threads.
    func stop() {
        drain()
        condition.lock()
        stopped = true
        condition.broadcast()
        while running > 0 || threadsEnded < threads.count { condition.wait() }
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while waiting.isEmpty && background == nil && !stopped { condition.wait() }
            let entry: Entry
            var waited = false
            var isRequest = false
            if !waiting.isEmpty {
                entry = waiting.removeFirst()
                onDepthChange?(waiting.count)
                requestsStarted += 1
                requestsRunning += 1
                isRequest = true
            } else if let job = background {
                entry = job
                background = nil
                waited = job.mark != requestsStarted
            } else {
                threadsEnded += 1
                condition.broadcast()
                condition.unlock()
                return
            }
            running += 1
            onRunningChange?(running)
            condition.unlock()

            let start = DispatchTime.now().uptimeNanoseconds
            if entry.ticket.isCancelled { entry.refuse(CancellationError()) } else { entry.run(waited) }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9

            condition.lock()
            running -= 1
            if isRequest { requestsRunning -= 1 }
            onRunningChange?(running)
            meanJobSeconds = 0.8 * meanJobSeconds + 0.2 * seconds
            condition.broadcast()
            condition.unlock()
        }
    }
}
