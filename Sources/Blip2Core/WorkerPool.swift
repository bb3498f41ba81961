import CKernels
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A fixed set of threads, created once and parked between jobs, that run the parts of one job at a time.
///
/// `run(parts:_:)` hands out part indices to the caller's thread and the workers until all are done;
/// it allocates nothing. Jobs from different threads are serialized, so a part owns its worker's scratch
/// memory; a job started from inside a part of the same pool (a nested call) runs on that thread alone,
/// with that part's worker index (and scratch), so nesting cannot deadlock. A part calling into another
/// pool is an ordinary caller of that pool: worker indices belong to one pool.
// @unchecked Sendable: its job and counters are published under pthread mutexes and C atomics.
public final class WorkerPool: @unchecked Sendable {
    /// Threads that work on a job, the caller's included.
    public let threads: Int
    private let shared: PoolShared

    /// Starts `threads - 1` worker threads (the caller is the other one).
    public init(threads: Int) {
        self.threads = max(1, threads)
        shared = PoolShared(threads: self.threads)
        for worker in 1..<self.threads {
            let shared = self.shared
            let thread = Thread { shared.workerMain(worker) }
            thread.name = "blip2-worker-\(worker)"
            thread.start()
        }
    }

    deinit { shared.stop(workers: threads - 1) }

    /// Runs `body(part, worker)` for every part in 0..<parts and returns when all have finished.
    /// `worker` (0..<threads) names the thread running the part, for per-thread scratch memory.
    public func run(parts: Int, _ body: (_ part: Int, _ worker: Int) -> Void) {
        guard parts > 0 else { return }
        if let worker = shared.currentWorker {
            for part in 0..<parts { body(part, worker) }
        } else if parts == 1 || threads == 1 {
            runOnCaller(parts: parts, body)
        } else {
            shared.run(parts: parts, body)
        }
    }

    /// Like `run`, but every part runs on the calling thread (as worker 0): for work too small to share.
    public func runOnCaller(parts: Int, _ body: (_ part: Int, _ worker: Int) -> Void) {
        guard parts > 0 else { return }
        if let worker = shared.currentWorker {
            for part in 0..<parts { body(part, worker) }
            return
        }
        shared.runAlone(parts: parts, body)
    }

    /// Memory private to `worker` while it runs a part: at least `bytes` long, 64-byte aligned.
    /// Allocates only when more is asked for than before.
    public func scratch(worker: Int, bytes: Int) -> UnsafeMutableRawPointer {
        shared.scratch(worker: worker, bytes: bytes)
    }
}

/// The state workers share with the pool; workers keep it alive, the pool's deinit stops them.
// @unchecked Sendable: as WorkerPool: pthread mutexes, condition variables and C atomics.
private final class PoolShared: @unchecked Sendable {
    // Counters, each on its own cache line: [generation, next claim, parts left, job tag].
    private let counters: UnsafeMutablePointer<Int64>
    private static let line = 8
    private var generation: UnsafeMutablePointer<Int64> { counters }
    private var nextPart: UnsafeMutablePointer<Int64> { counters + Self.line }
    private var remaining: UnsafeMutablePointer<Int64> { counters + 2 * Self.line }
    private var jobTag: UnsafeMutablePointer<Int64> { counters + 3 * Self.line }
    // A claim is (job sequence << 32 | part) and the tag (job sequence << 32 | parts): a worker descheduled
    // between claiming past the end of one job and looking at its size must not read its claim against the
    // next job's size (that ran a part twice and let the job end while a part still ran).
    private static let partBits: Int64 = 32
    private static let partMask: Int64 = (1 << 32) - 1
    // Spinning briefly before parking spares back-to-back jobs (several per layer) a wake-up each.
    private static let spinLimit = 2_000   // tens of microseconds of pause instructions

    private var job: ((Int, Int) -> Void)?
    /// The open job's sequence number (31 bits, never 0); changed only under `jobLock`.
    private var sequence: Int64 = 0
    private var stopping = false
    private var exited = 0
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let finished = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let jobLock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    /// One slot per worker, each written only by its own worker: raw storage, not Swift arrays, because
    /// writing an element of an array property is an access to the whole property, and workers writing
    /// their own elements at once would race on it (ThreadSanitizer reported it).
    private let scratchBuffers: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    private let scratchBytes: UnsafeMutablePointer<Int>
    private let workerCount: Int

    init(threads: Int) {
        counters = .allocate(capacity: 4 * Self.line)
        counters.initialize(repeating: 0, count: 4 * Self.line)   // job 0 has no parts
        workerCount = threads
        scratchBuffers = .allocate(capacity: threads)
        scratchBuffers.initialize(repeating: nil, count: threads)
        scratchBytes = .allocate(capacity: threads)
        scratchBytes.initialize(repeating: 0, count: threads)
        pthread_mutex_init(mutex, nil)
        pthread_mutex_init(jobLock, nil)
        pthread_cond_init(wake, nil)
        pthread_cond_init(finished, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        pthread_mutex_destroy(jobLock)
        pthread_cond_destroy(wake)
        pthread_cond_destroy(finished)
        mutex.deallocate(); jobLock.deallocate(); wake.deallocate(); finished.deallocate()
        for worker in 0..<workerCount { scratchBuffers[worker]?.deallocate() }
        scratchBuffers.deallocate()
        scratchBytes.deallocate()
        counters.deallocate()
    }

    func stop(workers: Int) {
        pthread_mutex_lock(mutex)
        stopping = true
        blip2_atomic_fetch_add(generation, 1)
        pthread_cond_broadcast(wake)
        while exited < workers { pthread_cond_wait(finished, mutex) }
        pthread_mutex_unlock(mutex)
    }

    /// A job on the caller's thread only, still exclusive of other jobs (worker 0's scratch is its own).
    func runAlone(parts: Int, _ body: (Int, Int) -> Void) {
        pthread_mutex_lock(jobLock)
        defer { pthread_mutex_unlock(jobLock) }
        let outer = Self.enter(self, as: 0)
        defer { Self.leave(restoring: outer) }
        for part in 0..<parts { body(part, 0) }
    }

    func run(parts: Int, _ body: (Int, Int) -> Void) {
        precondition(parts < 1 << 31, "a job has fewer than 2^31 parts")
        pthread_mutex_lock(jobLock)
        defer { pthread_mutex_unlock(jobLock) }
        withoutActuallyEscaping(body) { body in
            job = body
            sequence = sequence % (1 << 31) + 1
            blip2_atomic_store(remaining, Int64(parts))
            blip2_atomic_store(jobTag, sequence << Self.partBits | Int64(parts))
            blip2_atomic_store(nextPart, sequence << Self.partBits)
            pthread_mutex_lock(mutex)
            blip2_atomic_fetch_add(generation, 1)
            pthread_cond_broadcast(wake)
            pthread_mutex_unlock(mutex)

            let outer = Self.enter(self, as: 0)
            work(as: 0)
            Self.leave(restoring: outer)

            var spins = 0
            while blip2_atomic_load(remaining) > 0 && spins < Self.spinLimit {
                blip2_cpu_relax()
                spins += 1
            }
            if blip2_atomic_load(remaining) > 0 {
                pthread_mutex_lock(mutex)
                while blip2_atomic_load(remaining) > 0 { pthread_cond_wait(finished, mutex) }
                pthread_mutex_unlock(mutex)
            }
            job = nil
        }
    }

    func scratch(worker: Int, bytes: Int) -> UnsafeMutableRawPointer {
        precondition(worker >= 0 && worker < workerCount, "the worker index comes from run(parts:_:)")
        if let buffer = scratchBuffers[worker], scratchBytes[worker] >= bytes { return buffer }
        scratchBuffers[worker]?.deallocate()
        let size = max(bytes, 64)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        scratchBuffers[worker] = buffer
        scratchBytes[worker] = size
        return buffer
    }

    private func work(as worker: Int) {
        while true {
            let claim = blip2_atomic_fetch_add(nextPart, 1)
            let tag = blip2_atomic_load(jobTag)
            // A claim of another job (one that is over) or past the end means nothing is left here. A valid
            // claim keeps its job open (and `job` set) until the part is done, so the tag cannot move on.
            guard claim >> Self.partBits == tag >> Self.partBits, claim & Self.partMask < tag & Self.partMask else { return }
            runPart(Int(claim & Self.partMask), worker)
            if blip2_atomic_fetch_add(remaining, -1) == 1 {
                pthread_mutex_lock(mutex)
                pthread_cond_broadcast(finished)
                pthread_mutex_unlock(mutex)
            }
        }
    }

    // The job closure is borrowed from `run` (withoutActuallyEscaping): every reference taken here must be
    // dropped before the part counts as done, hence a separate, never-inlined frame.
    @inline(never)
    private func runPart(_ part: Int, _ worker: Int) {
        job?(part, worker)
    }

    func workerMain(_ worker: Int) {
        _ = Self.enter(self, as: worker)
        var seen: Int64 = 0
        while true {
            var spins = 0
            while blip2_atomic_load(generation) == seen && spins < Self.spinLimit {
                blip2_cpu_relax()
                spins += 1
            }
            pthread_mutex_lock(mutex)
            while blip2_atomic_load(generation) == seen && !stopping { pthread_cond_wait(wake, mutex) }
            let stop = stopping
            seen = blip2_atomic_load(generation)
            if stop {
                exited += 1
                pthread_cond_broadcast(finished)
                pthread_mutex_unlock(mutex)
                return
            }
            pthread_mutex_unlock(mutex)
            work(as: worker)
        }
    }

    // MARK: Thread-local worker identity

    // Which pool's part this thread is running, and as which worker. Both are recorded because a part may
    // call into another pool: there it is an ordinary caller, and its index (which may exceed that pool's
    // thread count) must not be taken for one of the other pool's workers.
    private static let poolKey = makeKey()
    private static let workerKey = makeKey()

    private static func makeKey() -> pthread_key_t {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }

    /// The pool and worker this thread was running as before `enter`, for `leave` to restore.
    typealias Membership = (pool: UnsafeMutableRawPointer?, worker: UnsafeMutableRawPointer?)

    /// Marks this thread as `worker` of `pool` and returns what it was before (a part of another pool, or nothing).
    static func enter(_ pool: PoolShared, as worker: Int) -> Membership {
        let outer = (pthread_getspecific(poolKey), pthread_getspecific(workerKey))
        // Unretained: a pool's workers and callers leave it before the pool can be freed.
        pthread_setspecific(poolKey, Unmanaged.passUnretained(pool).toOpaque())
        pthread_setspecific(workerKey, UnsafeRawPointer(bitPattern: worker + 1))
        return outer
    }

    static func leave(restoring outer: Membership) {
        pthread_setspecific(poolKey, outer.pool)
        pthread_setspecific(workerKey, outer.worker)
    }

    /// The worker index of this pool's part running on this thread (its worker threads always have one), or nil.
    var currentWorker: Int? {
        guard pthread_getspecific(Self.poolKey) == Unmanaged.passUnretained(self).toOpaque(),
              let value = pthread_getspecific(Self.workerKey) else { return nil }
        return Int(bitPattern: value) - 1
    }
}
