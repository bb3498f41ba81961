import Foundation

// MARK: - Several generations on one model
//
// The model runs one thing at a time (one set of activation buffers, one worker pool), but decoding is
// bound by reading the weights, so generations running side by side (a server's requests, each on its own
// thread) should share their decode steps: one step of the model gives every decoding sequence its next
// token and reads the weights once for all. Everything else the model does for them (an image encode, a
// prompt's prefill) runs alone between two steps, at most one such job between two steps, so a new request
// joins the batch after its prefill without holding the running ones up for more than one job.

/// Serialises a pipeline's model work and gathers its generations' decode steps into batched steps.
///
/// A generation `join`s once its prompt is in the cache and `leave`s when it ends; every joined generation
/// submits each step (all its beams at once) and waits; the step runs when every joined generation has
/// submitted. A single caller (the command line) runs each step at once, as a plain loop would.
// @unchecked Sendable: all of its state is behind its NSCondition.
public final class StepScheduler: @unchecked Sendable {
    private let condition = NSCondition()
    /// Whether the model runs something now.
    private var busy = false
    /// The thread inside `exclusive` (nested calls from it run at once).
    private var exclusiveOwner: Thread?
    /// Generations in their decode phase.
    private var joined = 0
    /// Submissions for the next step.
    private var pending: [Submission] = []
    private var exclusiveWaiting = 0
    /// Jobs run alone since the last step.
    private var exclusiveSinceStep = 0

    /// Called after each step with the number of sequences it advanced (a server's metrics).
    public var onStep: (@Sendable (_ sequences: Int) -> Void)? {
        get { condition.withLock { stepObserver } }
        set { condition.withLock { stepObserver = newValue } }
    }
    private var stepObserver: (@Sendable (_ sequences: Int) -> Void)?

    public init() {}

    private final class Submission {
        let states: [SessionState]
        let tokens: [Int]
        var done = false
        var error: (any Error)?
        init(states: [SessionState], tokens: [Int]) {
            self.states = states
            self.tokens = tokens
        }
    }

    /// Generations decoding now.
    public var decoding: Int { condition.withLock { joined } }

    /// Runs `body` with the model to itself, between two steps.
    func exclusive<T>(_ body: () throws -> T) rethrows -> T {
        condition.lock()
        if exclusiveOwner === Thread.current {
            condition.unlock()
            return try body()
        }
        exclusiveWaiting += 1
        while busy || (joined > 0 && exclusiveSinceStep > 0) { condition.wait() }
        exclusiveWaiting -= 1
        busy = true
        exclusiveSinceStep += 1
        exclusiveOwner = Thread.current
        condition.unlock()
        defer {
            condition.lock()
            busy = false
            exclusiveOwner = nil
            condition.broadcast()
            condition.unlock()
        }
        return try body()
    }

    /// Runs `body`, a generation's decoding, counted among those whose steps run together. Its prompt must
    /// be in the cache already: inside, the generation only steps (a feed would wait for its own step).
    func decoding<T>(_ body: () throws -> T) rethrows -> T {
        join()
        defer { leave() }
        return try body()
    }

    private func join() {
        condition.withLock { joined += 1 }
    }

    private func leave() {
        condition.lock()
        joined -= 1
        precondition(joined >= 0, "leave without join")
        condition.broadcast()
        condition.unlock()
    }

    /// Feeds `tokens[i]` to `states[i]` as part of the next step shared by every joined generation; returns
    /// once that step ran. The caller must have joined.
    func step(_ states: [SessionState], tokens: [Int]) throws {
        // Refused here, before the shared step, so one sequence's bad input is its own error only.
        for (state, token) in zip(states, tokens) { try state.checkAppendable(token) }
        let submission = Submission(states: states, tokens: tokens)
        condition.lock()
        defer { condition.unlock() }
        precondition(joined > 0, "a step from a generation that has not joined")
        pending.append(submission)
        condition.broadcast()
        while !submission.done {
            if !busy && pending.count == joined && !(exclusiveWaiting > 0 && exclusiveSinceStep == 0) {
                let batch = pending
                pending.removeAll()
                busy = true
                condition.unlock()
                run(batch)
                condition.lock()
                busy = false
                exclusiveSinceStep = 0
                condition.broadcast()
            } else {
                condition.wait()
            }
        }
        if let error = submission.error { throw error }
    }

    /// One model step for every submission's states (in groups the model takes at once).
    private func run(_ batch: [Submission]) {
        var states: [SessionState] = [], tokens: [Int] = []
        for submission in batch {
            states += submission.states
            tokens += submission.tokens
        }
        var failure: (any Error)?
        do { try SessionState.stepTogether(tokens, states) } catch { failure = error }
        condition.lock()
        for submission in batch {
            submission.error = failure
            submission.done = true
        }
        let observer = stepObserver
        condition.unlock()
        observer?(states.count)
    }
}
