import Dispatch

/// Runs `body(part)` for every part in `0..<parts` on Dispatch's threads and returns when all are done.
///
/// For data-parallel loops over raw buffers, where each part reads shared input and writes only its own
/// range or slot: Swift cannot check that of pointers, so the closure is not `@Sendable`, and keeping the
/// parts disjoint is the caller's promise (each call site says how it keeps it).
public func forEachDisjointPart(_ parts: Int, _ body: (_ part: Int) -> Void) {
    withoutActuallyEscaping(body) { body in
        nonisolated(unsafe) let body = body
        DispatchQueue.concurrentPerform(iterations: parts) { part in body(part) }
    }
}
