import Blip2Fuzz
import Foundation
import Testing

private let fuzzRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fuzz")

private func files(_ kind: String, _ target: FuzzTarget) -> [URL] {
    let folder = fuzzRoot.appendingPathComponent(kind).appendingPathComponent(target.rawValue)
    let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
    return names.filter { !$0.hasPrefix(".") }.sorted().map { folder.appendingPathComponent($0) }
}

/// Every seed and every input that ever crashed a fuzz target runs through it again. A regression
/// traps and takes the test process down: that is the failure this suite exists to show.
@Suite struct FuzzReplayTests {
    @Test(arguments: FuzzTarget.allCases)
    func seedsRunAndValidOnesAreAccepted(_ target: FuzzTarget) throws {
        let seeds = files("corpus", target)
        #expect(!seeds.isEmpty, "no seeds for \(target.rawValue) in Tests/Fuzz/corpus")
        // A harness that no longer reaches past the first check would fuzz nothing: valid seeds must pass.
        let accepted = try target.replay(seeds.map(\.path)).filter(\.accepted).count
        #expect(accepted > 0, "no seed of \(target.rawValue) is accepted by every reader")
    }

    @Test(arguments: FuzzTarget.allCases)
    func inputsThatOnceCrashedAreHandled(_ target: FuzzTarget) throws {
        for run in try target.replay(files("crashes", target).map(\.path)) {
            #expect(run.seconds < 30, "\(run.path) took \(run.seconds) s")
        }
    }

    @Test func multiFileInputsSplitAsJoined() {
        let parts = [Data("a".utf8), Data(), Data("{\"x\": 1}".utf8)]
        #expect(FuzzInput.split(FuzzInput.join(parts), parts: 3) == parts)
        #expect(FuzzInput.split(Data("only".utf8), parts: 3) == [Data("only".utf8), Data(), Data()])
    }
}
