import Foundation
import Testing
@testable import Blip2Models

/// Freed caches' memory is handed to the next cache of the same size, within the pool's limits, and a cache
/// built on reused memory computes exactly what one on fresh memory does.
@Suite struct KVStoragePoolTests {
    @Test func memoryIsReusedForTheSameSizeOnly() {
        let pool = KVStoragePool(buffers: 2, limitBytes: 1 << 20)
        let a = pool.take(floats: 1000)
        pool.give(a, floats: 1000)
        #expect(pool.keptBytes == 4000)
        let other = pool.take(floats: 999)
        #expect(other != a, "another size gets other memory")
        #expect(pool.take(floats: 1000) == a && pool.keptBytes == 0)
        #expect(Int(bitPattern: a) % KVStoragePool.alignment == 0)
        pool.give(a, floats: 1000)
        pool.give(other, floats: 999)
    }

    @Test func keepsAtMostItsBuffersAndBytes() {
        let pool = KVStoragePool(buffers: 2, limitBytes: 10_000)
        let buffers = (0..<3).map { _ in pool.take(floats: 1000) }
        for buffer in buffers { pool.give(buffer, floats: 1000) }
        #expect(pool.keptBytes == 8000, "the oldest of three is freed: two buffers at most")
        pool.give(pool.take(floats: 3000), floats: 3000)
        #expect(pool.keptBytes == 8000, "a buffer over the byte limit is freed at once")
        pool.give(pool.take(floats: 2000), floats: 2000)
        #expect(pool.keptBytes == 8000, "the two oldest are freed to stay within 10,000 bytes")
        let last = pool.take(floats: 2000)
        #expect(pool.keptBytes == 0)
        pool.give(last, floats: 2000)
    }

    @Test func aSessionOnReusedMemoryComputesWhatAFreshOneDoes() throws {
        let model = try ConvertedModels.shared.model("base-f32")
        // `fresh` is made while `first` is alive, so it cannot have `first`'s memory. (A capacity no other
        // test uses: the pool is shared by tests running at the same time.)
        let first = model.makeSession(capacity: 999), fresh = model.makeSession(capacity: 999)
        try first.feed(tokens: [2, 50, 51, 52, 53, 54])
        try fresh.feed(tokens: [2, 7, 8])
        let expected = fresh.logits
        var reused: LanguageSession? = nil
        do {
            let storage = first.cache.keys(layer: 0)
            _ = consume first
            let again = model.makeSession(capacity: 999)
            #expect(again.cache.keys(layer: 0) == storage, "the freed cache's memory is taken again")
            reused = again
        }
        let session = try #require(reused)
        try session.feed(tokens: [2, 7, 8])
        #expect(session.logits == expected)
    }
}
