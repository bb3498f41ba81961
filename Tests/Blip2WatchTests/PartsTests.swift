import Blip2Image
import Foundation
import Testing
@testable import Blip2Watch

@Suite struct LatestFrameSlotTests {
    @Test func theNewestValueWinsAndReplacementsAreCounted() {
        let slot = LatestFrameSlot<Int>()
        #expect(slot.put(1) == false)
        #expect(slot.put(2) == true)
        #expect(slot.put(3) == true)
        #expect(slot.take() == 3)
        #expect(slot.put(4) == false)
        slot.end()
        #expect(slot.take() == 4)  // what was held when the producer ended is still taken
        #expect(slot.take() == nil)
    }

    @Test func cancellingDropsWhatIsHeldAndRefusesMore() {
        let slot = LatestFrameSlot<Int>()
        slot.put(1)
        #expect(slot.cancel() == true)
        #expect(slot.put(2) == true)
        #expect(slot.take() == nil)
        #expect(slot.isCancelled)
    }

    /// A number written on one thread and read on another once a semaphore or the slot's end ordered them.
    final class Box: @unchecked Sendable { var value = 0 }

    /// The consumer takes once per burst of 100 puts, each after its burst is in: always that burst's newest.
    @Test func aFastProducerAndASlowConsumer() {
        let slot = LatestFrameSlot<Int>()
        let count = 2000, burst = 100
        let burstIn = DispatchSemaphore(value: 0), tookOne = DispatchSemaphore(value: 0)
        let replaced = Box()
        Thread {
            for value in 1...count {
                if slot.put(value) { replaced.value += 1 }
                if value % burst == 0 {
                    burstIn.signal()
                    _ = tookOne.wait(timeout: .now() + 60)
                }
            }
            slot.end()
        }.start()
        var taken: [Int] = []
        for _ in 0..<count / burst {
            guard burstIn.wait(timeout: .now() + 60) == .success, let value = slot.take() else { break }
            taken.append(value)
            tookOne.signal()
        }
        #expect(slot.take() == nil)
        #expect(taken == Array(stride(from: burst, through: count, by: burst)))
        #expect(replaced.value == count - count / burst)
    }

    /// Producer and consumer at full speed: whatever the interleaving, values only get newer, the last one is
    /// delivered, and every value is either taken or counted as replaced.
    @Test func producerAndConsumerRacing() {
        let slot = LatestFrameSlot<Int>()
        let count = 20_000
        let replaced = Box()
        Thread {
            for value in 1...count where slot.put(value) { replaced.value += 1 }
            slot.end()
        }.start()
        var taken: [Int] = []
        while let value = slot.take() { taken.append(value) }
        #expect(zip(taken, taken.dropFirst()).allSatisfy { $0 < $1 })
        #expect(taken.last == count)
        #expect(taken.count + replaced.value == count)
    }

    @Test func takeWaitsForItsTimeButNotForAnEndedProducer() {
        let slot = LatestFrameSlot<Int>()
        slot.put(1)
        let start = Date()
        #expect(slot.take(notBefore: start.addingTimeInterval(0.2)) == 1)
        #expect(Date().timeIntervalSince(start) >= 0.2)
        // An ended producer: what is held is taken at once, not an hour from now (bounded here by a minute).
        slot.put(2)
        slot.end()
        let result = Box()
        let taken = DispatchSemaphore(value: 0)
        Thread {
            result.value = slot.take(notBefore: Date().addingTimeInterval(3600)) ?? -1
            taken.signal()
        }.start()
        let tookIt = taken.wait(timeout: .now() + 60) == .success
        #expect(tookIt, "take waited for its time although the producer had ended")
        if !tookIt { _ = slot.cancel() }
        #expect(!tookIt || result.value == 2)
    }
}

@Suite struct ChangeDetectorTests {
    static func image(_ width: Int, _ height: Int, _ pixel: (Int, Int) -> (UInt8, UInt8, UInt8)) -> RGBImage {
        var pixels: [UInt8] = []
        for y in 0..<height {
            for x in 0..<width {
                let (r, g, b) = pixel(x, y)
                pixels += [r, g, b]
            }
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }

    @Test func measuresAgainstTheAcceptedFrame() {
        var detector = ChangeDetector()
        let black = Self.image(64, 48) { _, _ in (0, 0, 0) }
        let white = Self.image(64, 48) { _, _ in (255, 255, 255) }
        // Left half white: cell columns 0-15 of 32 (2 pixels wide each) go from 0 to 255, the rest stay.
        let half = Self.image(64, 48) { x, _ in x < 32 ? (255, 255, 255) : (0, 0, 0) }
        #expect(detector.measure(black) == 1)  // nothing to compare with yet
        detector.accept()
        #expect(detector.measure(black) == 0)
        #expect(detector.measure(white) == 1)
        #expect(detector.measure(half) == 0.5)
        #expect(detector.measure(Self.image(64, 49) { _, _ in (0, 0, 0) }) == 1)  // another size
        detector.accept()  // the 64x49 black frame
        #expect(detector.measure(Self.image(64, 49) { _, _ in (0, 0, 0) }) == 0)
    }

    @Test func lumaWeightsAndSmallImages() {
        #expect(ChangeDetector.weights.red + ChangeDetector.weights.green + ChangeDetector.weights.blue == 256)
        var detector = ChangeDetector()
        _ = detector.measure(Self.image(3, 2) { _, _ in (0, 0, 0) })
        detector.accept()
        // One of six pixels goes red: one cell of a 3 x 2 grid changes by round(77 * 255 / 256) = 77.
        let change = detector.measure(Self.image(3, 2) { x, y in x == 1 && y == 1 ? (255, 0, 0) : (0, 0, 0) })
        #expect(abs(change - 77.0 / 255.0 / 6.0) < 1e-12)
    }

    @Test func noiseAveragesOut() {
        var random = SeededGenerator(state: 3)
        let scene: (Int, Int) -> (UInt8, UInt8, UInt8) = { x, y in (UInt8((x * 3) % 256), UInt8((y * 5) % 256), 128) }
        var detector = ChangeDetector()
        _ = detector.measure(Self.image(320, 240, scene))
        detector.accept()
        // Every sample moved by up to 3 levels: no cell average can move more than 3.
        let noisy = Self.image(320, 240) { x, y in
            let (r, g, b) = scene(x, y)
            func jitter(_ v: UInt8) -> UInt8 { UInt8(clamping: Int(v) + Int.random(in: -3...3, using: &random)) }
            return (jitter(r), jitter(g), jitter(b))
        }
        #expect(detector.measure(noisy) <= 3.0 / 255.0)
    }
}

@Suite struct FolderScannerTests {
    typealias Entry = FolderScanner.Entry

    @Test func takesNewFilesOnceTheyStopChanging() {
        var scanner = FolderScanner(existing: [Entry(name: "old.jpg", size: 100, modified: 1)])
        #expect(scanner.scan([Entry(name: "old.jpg", size: 100, modified: 1), Entry(name: "a.jpg", size: 10, modified: 5)]) == [])
        // a.jpg grew: still being written.
        #expect(scanner.scan([Entry(name: "old.jpg", size: 100, modified: 1), Entry(name: "a.jpg", size: 20, modified: 6)]) == [])
        #expect(scanner.scan([Entry(name: "old.jpg", size: 100, modified: 1), Entry(name: "a.jpg", size: 20, modified: 6),
                              Entry(name: "b.png", size: 0, modified: 7)]) == ["a.jpg"])
        // Taken once; an empty file is never taken.
        #expect(scanner.scan([Entry(name: "a.jpg", size: 20, modified: 6), Entry(name: "b.png", size: 0, modified: 7)]) == [])
        // Two finish together: oldest first. a.jpg rewritten in place is new again; old.jpg changed after the start too.
        let later = [Entry(name: "d.jpg", size: 5, modified: 11), Entry(name: "c.jpg", size: 5, modified: 10),
                     Entry(name: "a.jpg", size: 30, modified: 12), Entry(name: "old.jpg", size: 101, modified: 13)]
        #expect(scanner.scan(later) == [])
        #expect(scanner.scan(later) == ["c.jpg", "d.jpg", "a.jpg", "old.jpg"])
        #expect(scanner.scan(later) == [])
        // Removed and written again under the same name: taken again.
        #expect(scanner.scan([]) == [])
        #expect(scanner.scan([Entry(name: "c.jpg", size: 5, modified: 10)]) == [])
        #expect(scanner.scan([Entry(name: "c.jpg", size: 5, modified: 10)]) == ["c.jpg"])
    }

    @Test func onlyVisibleImageFiles() {
        for name in ["a.jpg", "B.JPEG", "c.png", "frame-0001.Jpg"] { #expect(FolderScanner.isImageName(name), "\(name)") }
        for name in [".a.jpg", "a.jpg.tmp", "a.gif", "jpg", "a.webp"] { #expect(!FolderScanner.isImageName(name), "\(name)") }
    }
}

@Suite struct FrameArchiveTests {
    @Test func keepsTheNewestFramesOnly() throws {
        let folder = try TemporaryFolder()
        let saved = folder.url.appendingPathComponent("saved").path
        try FileManager.default.createDirectory(atPath: saved, withIntermediateDirectories: true)
        // Left by an earlier run (older by name), and a file that is not the archive's.
        try Data([1]).write(to: URL(fileURLWithPath: saved + "/frame-20000101T000000.000Z-000001.jpg"))
        try Data([2]).write(to: URL(fileURLWithPath: saved + "/notes.txt"))
        let archive = try FrameArchive(folder: saved, limit: 3)
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        var paths: [String] = []
        for number in 1...4 {
            let data = number == 4 ? Data([0x89, 0x50, 0x4E, 0x47, 0x0D]) : Data([0xFF, 0xD8, UInt8(number)])
            let frame = Frame(number: number, data: data, name: "frame \(number)", arrival: 0, arrivalDate: start.addingTimeInterval(Double(number)))
            let path = try archive.save(frame)
            #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == data)
            paths.append(path)
        }
        #expect(URL(fileURLWithPath: paths[0]).lastPathComponent == "frame-20270115T080001.000Z-000001.jpg")
        #expect(paths[3].hasSuffix("-000004.png"))
        let left = try FileManager.default.contentsOfDirectory(atPath: saved).sorted()
        #expect(left == ["frame-20270115T080002.000Z-000002.jpg", "frame-20270115T080003.000Z-000003.jpg",
                         "frame-20270115T080004.000Z-000004.png", "notes.txt"])
    }

    /// The clock behind the names already there (a board without a clock before its time sync): each new
    /// frame sorts first by name, yet must be the one kept, and its returned path must exist.
    @Test func theFrameJustSavedSurvivesAClockBehindTheArchive() throws {
        let folder = try TemporaryFolder()
        let saved = folder.url.appendingPathComponent("saved").path
        try FileManager.default.createDirectory(atPath: saved, withIntermediateDirectories: true)
        let future = (1...3).map { "frame-20990101T000000.000Z-00000\($0).jpg" }
        for name in future { try Data([9]).write(to: URL(fileURLWithPath: saved + "/" + name)) }
        let archive = try FrameArchive(folder: saved, limit: 3)
        let start = Date(timeIntervalSince1970: 0)
        var paths: [String] = []
        for number in 1...4 {
            let data = Data([0xFF, 0xD8, UInt8(number)])
            let path = try archive.save(Frame(number: number, data: data, name: "frame \(number)", arrival: 0,
                                              arrivalDate: start.addingTimeInterval(Double(number))))
            #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == data, "frame \(number) is gone")
            let left = try FileManager.default.contentsOfDirectory(atPath: saved)
            #expect(left.count == 3 && left.contains(URL(fileURLWithPath: path).lastPathComponent))
            paths.append(path)
        }
        // Four saves into a full archive of three: the earlier run's frames went first, then this run's oldest.
        #expect(try FileManager.default.contentsOfDirectory(atPath: saved).sorted() ==
                paths[1...].map { URL(fileURLWithPath: $0).lastPathComponent })
        // The same name saved again (a restarted clock and counter) is one frame, the newest.
        let again = try archive.save(Frame(number: 2, data: Data([0xFF, 0xD8, 7]), name: "again", arrival: 0,
                                           arrivalDate: start.addingTimeInterval(2)))
        #expect(again == paths[1])
        #expect(try Data(contentsOf: URL(fileURLWithPath: again)) == Data([0xFF, 0xD8, 7]))
        #expect(try FileManager.default.contentsOfDirectory(atPath: saved).count == 3)
    }

    @Test func refusesAFileWhereTheFolderShouldBe() throws {
        let folder = try TemporaryFolder()
        try Data().write(to: URL(fileURLWithPath: folder.path("file")))
        #expect(throws: FrameSourceError.self) { try FrameArchive(folder: folder.path("file"), limit: 1) }
    }
}

@Suite struct FolderSourceReadTests {
    final class Outcome: @unchecked Sendable {
        var result: Result<Data, Error>?
    }

    /// A frame name swapped for a FIFO after the poll saw a regular file: the read must refuse it, not
    /// wait in open() for a writer that never comes.
    @Test func aFIFOInPlaceOfAFrameIsRefusedWithoutBlocking() throws {
        let folder = try TemporaryFolder()
        let fifo = folder.path("frame.jpg")
        #expect(mkfifo(fifo, 0o600) == 0)
        let source = FolderSource(path: folder.url.path)
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        Thread {
            outcome.result = Result { try source.read(fifo) }
            done.signal()
        }.start()
        // A minute only bounds a read that blocks (for ever, without a writer); an unblocked one takes microseconds.
        let finished = done.wait(timeout: .now() + 60) == .success
        if !finished {
            // Give the blocked reader its writer so the thread ends with the test.
            let writer = open(fifo, O_WRONLY | O_NONBLOCK)
            if writer >= 0 { close(writer) }
            done.wait()
        }
        #expect(finished, "reading a FIFO named frame.jpg blocked for over a minute")
        guard case .failure(let error as FrameSourceError)? = outcome.result else {
            Issue.record("expected a FrameSourceError, got \(String(describing: outcome.result))")
            return
        }
        #expect(error.message.contains("FIFO"), "\(error.message)")
    }

    @Test func aFrameOverTheByteLimitIsRefused() throws {
        let folder = try TemporaryFolder()
        try Data(count: 101).write(to: URL(fileURLWithPath: folder.path("big.jpg")))
        try Data(count: 100).write(to: URL(fileURLWithPath: folder.path("fits.jpg")))
        let source = FolderSource(path: folder.url.path, limits: FrameLimits(maxFileBytes: 100))
        #expect(throws: FrameSourceError("the file has 101 bytes, over the limit of 100")) { try source.read(folder.path("big.jpg")) }
        #expect(try source.read(folder.path("fits.jpg")) == Data(count: 100))
    }
}
