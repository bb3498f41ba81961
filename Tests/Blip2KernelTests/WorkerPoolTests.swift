import Blip2Core
import CKernels
import Foundation
import Testing

@Suite struct WorkerPoolTests {
    @Test func everyPartRunsExactlyOnce() {
        let pool = WorkerPool(threads: 3)
        for parts in [1, 2, 3, 7, 64, 1000] {
            let counts = UnsafeMutablePointer<Int>.allocate(capacity: parts)
            counts.initialize(repeating: 0, count: parts)
            let workers = UnsafeMutablePointer<Int>.allocate(capacity: parts)
            pool.run(parts: parts) { part, worker in
                counts[part] += 1
                workers[part] = worker
            }
            #expect((0..<parts).allSatisfy { counts[$0] == 1 }, "\(parts) parts")
            #expect((0..<parts).allSatisfy { workers[$0] >= 0 && workers[$0] < pool.threads })
            counts.deallocate()
            workers.deallocate()
        }
    }

    @Test func manyShortJobsInARow() {
        let pool = WorkerPool(threads: 2)
        let slots = UnsafeMutablePointer<Int>.allocate(capacity: 4)
        defer { slots.deallocate() }
        var total = 0
        for job in 0..<5000 {
            slots.initialize(repeating: 0, count: 4)
            pool.run(parts: 4) { part, _ in slots[part] = job + part }
            total += (0..<4).reduce(0) { $0 + slots[$1] - job }
        }
        #expect(total == 5000 * 6)
    }

    /// A worker whose claim fell past the end of a small job must not count it against the next, larger
    /// job: that ran a part twice and let the next job end while a part was still running (a crash after
    /// thousands of captions in a long `blip2 watch`). Jobs of alternating sizes, more threads than cores:
    /// before the fix, about one pair in 50,000 went wrong here (or crashed), some 70,000 pairs in 5 s.
    @Test func aLateClaimNeverLandsInTheNextJob() {
        let pool = WorkerPool(threads: 8)
        let counts = UnsafeMutablePointer<Int>.allocate(capacity: 64)
        defer { counts.deallocate() }
        var wrong = 0
        let deadline = Date().addingTimeInterval(5)
        var jobs = 0
        while Date() < deadline, jobs < 1_000_000 {
            for parts in [1 + jobs % 3, 64] {
                counts.initialize(repeating: 0, count: parts)
                pool.run(parts: parts) { part, _ in counts[part] += 1 }
                if !(0..<parts).allSatisfy({ counts[$0] == 1 }) { wrong += 1 }
            }
            jobs += 1
        }
        #expect(wrong == 0, "\(wrong) of \(jobs) job pairs ran a part other than once")
    }

    @Test func nestedJobsRunInline() {
        let pool = WorkerPool(threads: 2)
        let sums = UnsafeMutablePointer<Int>.allocate(capacity: 4)
        sums.initialize(repeating: 0, count: 4)
        defer { sums.deallocate() }
        pool.run(parts: 4) { part, _ in
            pool.run(parts: 3) { inner, _ in sums[part] += inner + 1 }
        }
        #expect((0..<4).allSatisfy { sums[$0] == 6 })
    }

    /// A part of one pool calling into another is an ordinary caller there: it gets that pool's worker
    /// indices, not its own. When the thread-local index was process-wide, a part running as worker 3 of
    /// a 4-thread pool ran the 2-thread pool's job as "worker 3", and that pool's `scratch(worker: 3)` trapped.
    @Test func aPartCallingAnotherPoolGetsThatPoolsWorkers() {
        let outer = WorkerPool(threads: 4)
        let inner = WorkerPool(threads: 2)
        let counters = UnsafeMutablePointer<Int64>.allocate(capacity: 1)
        let innerWorkers = UnsafeMutablePointer<Int>.allocate(capacity: 4 * 8)
        let outerWorkers = UnsafeMutablePointer<Int>.allocate(capacity: 4)
        let outerAfter = UnsafeMutablePointer<Int>.allocate(capacity: 4)
        defer { counters.deallocate(); innerWorkers.deallocate(); outerWorkers.deallocate(); outerAfter.deallocate() }
        counters.initialize(to: 0)
        innerWorkers.initialize(repeating: -1, count: 4 * 8)
        outer.run(parts: 4) { part, worker in
            // Each part waits for the other three, so all four threads (workers 0 to 3) hold one.
            blip2_atomic_fetch_add(counters, 1)
            let deadline = Date().addingTimeInterval(60)
            while blip2_atomic_load(counters) < 4 && Date() < deadline { usleep(100) }
            outerWorkers[part] = worker
            inner.run(parts: 8) { innerPart, innerWorker in
                innerWorkers[part * 8 + innerPart] = innerWorker
                guard innerWorker >= 0 && innerWorker < inner.threads else { return }   // would trap below
                inner.scratch(worker: innerWorker, bytes: 64).storeBytes(of: innerPart, as: Int.self)
            }
            // Back in the outer pool's part: a nested outer job still runs inline, as this worker.
            outer.run(parts: 1) { _, again in outerAfter[part] = again }
        }
        #expect(Set((0..<4).map { outerWorkers[$0] }) == [0, 1, 2, 3])
        #expect((0..<4 * 8).allSatisfy { innerWorkers[$0] >= 0 && innerWorkers[$0] < inner.threads },
                "inner worker indices: \(Set((0..<4 * 8).map { innerWorkers[$0] }).sorted())")
        #expect((0..<4).allSatisfy { outerAfter[$0] == outerWorkers[$0] })
    }

    @Test func callersOnSeveralThreadsTakeTurns() async {
        let pool = WorkerPool(threads: 2)
        await withTaskGroup(of: Bool.self) { group in
            for caller in 0..<4 {
                group.addTask {
                    let values = UnsafeMutablePointer<Int>.allocate(capacity: 50)
                    defer { values.deallocate() }
                    for _ in 0..<200 {
                        pool.run(parts: 50) { part, _ in values[part] = part * caller }
                        if !(0..<50).allSatisfy({ values[$0] == $0 * caller }) { return false }
                    }
                    return true
                }
            }
            for await ok in group { #expect(ok) }
        }
    }

    @Test func scratchIsPerWorkerAndKept() {
        let pool = WorkerPool(threads: 2)
        let first = pool.scratch(worker: 1, bytes: 100)
        #expect(Int(bitPattern: first) % 64 == 0)
        #expect(pool.scratch(worker: 1, bytes: 64) == first)
        #expect(pool.scratch(worker: 0, bytes: 100) != first)
    }

    /// This thread's kernel id (/proc/thread-self links to /proc/PID/task/TID; Glibc's gettid is not imported).
    static func threadId() -> Int32 {
        let link = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self")) ?? ""
        return Int32(link.split(separator: "/").last ?? "") ?? 0
    }

    /// Thread ids of this process that are alive now.
    static func liveThreads() -> Set<Int32> {
        Set(((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []).compactMap { Int32($0) })
    }

    /// Releasing a pool ends its worker threads. The workers are identified by the thread ids that run
    /// parts (each part waits until every worker holds one), then must vanish from /proc once the pool is gone.
    @Test func deinitStopsTheWorkers() {
        for _ in 0..<5 {
            let threads = 3
            let ids = UnsafeMutablePointer<Int32>.allocate(capacity: threads)
            ids.initialize(repeating: 0, count: threads)
            defer { ids.deallocate() }
            let arrived = UnsafeMutablePointer<Int>.allocate(capacity: 1)
            arrived.initialize(to: 0)
            defer { arrived.deallocate() }
            let lock = NSLock()
            do {
                let pool = WorkerPool(threads: threads)
                pool.run(parts: threads) { _, worker in
                    lock.lock()
                    ids[worker] = Self.threadId()
                    arrived.pointee += 1
                    lock.unlock()
                    let deadline = Date().addingTimeInterval(10)
                    while Date() < deadline {
                        lock.lock()
                        let all = arrived.pointee == threads
                        lock.unlock()
                        if all { break }
                        usleep(100)
                    }
                }
            }
            let workers = (1..<threads).map { ids[$0] }
            #expect(Set(workers).count == threads - 1 && !workers.contains(0), "every worker ran a part: \(workers)")
            #expect(ids[0] == Self.threadId(), "the caller is worker 0")
            let deadline = Date().addingTimeInterval(10)
            while !Self.liveThreads().isDisjoint(with: workers), Date() < deadline { usleep(1000) }
            #expect(Self.liveThreads().isDisjoint(with: workers), "worker threads \(workers) outlived their pool")
        }
    }
}
