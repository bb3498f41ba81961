import Blip2Pipeline
import Blip2Watch
import Foundation
import Testing
@testable import Blip2Server

/// Records what ran on the model thread, in order.
private final class Journal: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [String] = []
    func add(_ entry: String) { lock.withLock { entries.append(entry) } }
    var all: [String] { lock.withLock { entries } }
}

@Suite("the camera's parts")
struct CameraPartsTests {
    @Test("the background job runs only when no request waits, knows whether requests ran first, and is one at a time")
    func backgroundYieldsToRequests() throws {
        let worker = ModelWorker(capacity: 4)
        worker.start()
        defer { worker.stop() }
        let journal = Journal()
        let release = DispatchSemaphore(value: 0), started = DispatchSemaphore(value: 0), done = DispatchGroup()

        // A request holds the model; the background job is set, then another request arrives.
        done.enter()
        try worker.submit(JobTicket(), run: { started.signal(); release.wait(); journal.add("first"); done.leave() }, refuse: { _ in done.leave() })
        #expect(started.wait(timeout: .now() + 10) == .success)
        done.enter()
        try worker.submitBackground(run: { waited in journal.add("camera waited=\(waited)"); done.leave() }, refuse: { _ in done.leave() })
        #expect(throws: WorkerError.self) { try worker.submitBackground(run: { _ in }, refuse: { _ in }) }
        done.enter()
        try worker.submit(JobTicket(), run: { journal.add("second"); done.leave() }, refuse: { _ in done.leave() })
        // The background job is not counted in the queue.
        #expect(worker.depth == 1)
        release.signal()
        #expect(done.wait(timeout: .now() + 10) == .success)
        #expect(journal.all == ["first", "second", "camera waited=true"])

        // On an idle model it runs at once, and nothing ran before it.
        let idle = DispatchSemaphore(value: 0)
        try worker.submitBackground(run: { waited in journal.add("camera waited=\(waited)"); idle.signal() }, refuse: { _ in idle.signal() })
        #expect(idle.wait(timeout: .now() + 10) == .success)
        #expect(journal.all.last == "camera waited=false")
        // Its own previous job still running when it is set again does not count as a wait (the next one is
        // set from inside the running one, so it is still running then).
        let chained = DispatchSemaphore(value: 0)
        try worker.submitBackground(run: { _ in
            try? worker.submitBackground(run: { waited in journal.add("chained waited=\(waited)"); chained.signal() }, refuse: { _ in chained.signal() })
        }, refuse: { _ in chained.signal() })
        #expect(chained.wait(timeout: .now() + 10) == .success)
        #expect(journal.all.last == "chained waited=false")
    }

    @Test("a free slot takes a job even before a slot thread has picked up the one before it")
    func freeSlotsAreNotTheQueue() throws {
        // Not started: submitted jobs stay waiting, as they do while slow slot threads wake up.
        func accepted(slots: Int, capacity: Int, submitted: Int) -> Int {
            let worker = ModelWorker(capacity: capacity, slots: slots)
            var count = 0
            for _ in 0..<submitted where (try? worker.submit(JobTicket(), run: {}, refuse: { _ in })) != nil { count += 1 }
            worker.stop()
            return count
        }
        #expect(accepted(slots: 2, capacity: 0, submitted: 5) == 2)
        #expect(accepted(slots: 1, capacity: 0, submitted: 3) == 1)
        #expect(accepted(slots: 4, capacity: 3, submitted: 9) == 7)
        let worker = ModelWorker(capacity: 0, slots: 2)
        defer { worker.stop() }
        try worker.submit(JobTicket(), run: {}, refuse: { _ in })
        try worker.submit(JobTicket(), run: {}, refuse: { _ in })
        #expect(throws: WorkerError.self) { try worker.checkRoom() }
    }

    @Test("draining refuses the background job")
    func drainRefusesBackground() throws {
        let worker = ModelWorker(capacity: 1)
        // Not started: the job waits until the drain refuses it.
        let refused = DispatchSemaphore(value: 0)
        let journal = Journal()
        try worker.submitBackground(run: { _ in journal.add("ran") }, refuse: { error in journal.add("\(error)"); refused.signal() })
        worker.drain()
        #expect(refused.wait(timeout: .now() + 5) == .success)
        #expect(journal.all == ["shuttingDown"])
        #expect(throws: WorkerError.self) { try worker.submitBackground(run: { _ in }, refuse: { _ in }) }
    }

    @Test("a listener that does not read keeps only the newest events; past the limit listeners are refused; close ends them")
    func listenersAreBounded() async throws {
        let listeners = CameraListeners(capacity: 2)
        let (id, events) = try #require(listeners.add(opening: ["opening"]))
        for index in 0..<100 { listeners.send("event \(index)") }
        #expect(listeners.add(opening: []) != nil)
        #expect(listeners.add(opening: []) == nil)
        listeners.remove(id)
        var received: [String] = []
        for await event in events { received.append(event) }
        #expect(received == (100 - CameraListeners.buffered..<100).map { "event \($0)" })
        #expect(listeners.count == 1)

        listeners.close()
        #expect(listeners.count == 0)
        #expect(listeners.add(opening: []) == nil)
    }

    @Test("once the camera stops, a new event stream is refused as shutting down, not as one listener too many")
    func eventsRefusedWhileStopping() throws {
        struct NoFrames: FrameSource {
            var name: String { "none" }
            func run(into sink: FrameSink) throws {}
        }
        let pipeline = try Pipeline(modelPath: demoModel)
        let server = try ModelServer(pipeline: pipeline, modelPath: demoModel, configuration: ServerConfiguration(),
                                     camera: CameraConfiguration(source: NoFrames()))
        let camera = try #require(server.camera)
        _ = try camera.events()
        camera.stop()
        do {
            _ = try camera.events()
            Issue.record("a stopped camera took a listener")
        } catch let error as APIError {
            #expect(error.status.code == 503)
            #expect(error.code == "shutting_down")
            #expect(error.message == "the server is shutting down")
        }
    }
}
