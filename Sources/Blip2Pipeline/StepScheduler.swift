import Blip2Models
import Foundation

// MARK: - Several generations on one model
//
// The model runs one thing at a time (one set of activation buffers, one worker pool), but decoding is
// bound by reading the weights, so generations running side by side (a server's requests, each on its own
// thread) should share their decode steps: one step of the model gives every decoding sequence its next
// token and reads the weights once for all. A new request's prompt tokens ride on the next step too (its
// rows beside the decoding ones; the weights are read once for both). Everything else the model does for
// them (an image encode, its positions, a prompt too long for a step) runs alone between two steps, at most
// one such job between two steps, so the running ones are never held up for more than one job.

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
    /// The next step's sequences, flat (a generation adds all its beams at once), the tokens each takes
    /// (one while decoding, a prompt's several), and how many generations have submitted theirs.
    private var pendingStates: [SessionState] = []
    private var pendingTokens: [Int] = []
    private var pendingCounts: [Int] = []
    private var submitted = 0
    /// The running step's sequences, swapped with the pending ones: once grown, a step allocates nothing.
    private var stepStates: [SessionState] = []
    private var stepTokens: [Int] = []
    private var stepCounts: [Int] = []
    private var stepSessions: [LanguageSession] = []
    /// Steps taken and finished so far; a submission belongs to the step after the last one taken.
    private var stepsTaken = 0
    private var stepsFinished = 0
    /// The step that failed last, and why (its submitters read it before another step can finish).
    private var failedStep = 0
    private var failure: (any Error)?
    private var exclusiveWaiting = 0
    /// Jobs run alone since the last step.
    private var exclusiveSinceStep = 0

    /// Called after each step with the number of sequences it advanced and the tokens it fed them (more than
    /// the sequences when a prompt rode on it): a server's metrics.
    public var onStep: (@Sendable (_ sequences: Int, _ tokens: Int) -> Void)? {
        get { condition.withLock { stepObserver } }
        set { condition.withLock { stepObserver = newValue } }
    }
    private var stepObserver: (@Sendable (_ sequences: Int, _ tokens: Int) -> Void)?

    public init() {}

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
        try submit {
            pendingStates.append(contentsOf: states)
            pendingTokens.append(contentsOf: tokens)
            pendingCounts.append(contentsOf: repeatElement(1, count: tokens.count))
        }
    }

    /// One sequence's token in the next shared step (greedy search and sampling: no arrays to build).
    func step(_ state: SessionState, token: Int) throws {
        try state.checkAppendable(token)
        try submit {
            pendingStates.append(state)
            pendingTokens.append(token)
            pendingCounts.append(1)
        }
    }

    /// Feeds a prompt's `tokens` (at most `LanguageSession.maxStepRows`) to `state` in the next step, when
    /// generations are decoding: the step reads the weights once for their tokens and the prompt, where a
    /// prefill of its own would read them again. Alone, it runs as a prefill between two steps.
    func prompt(_ state: SessionState, tokens: [Int]) throws {
        guard !tokens.isEmpty else { return }
        try state.session.checkStep(tokens)
        let riding = condition.withLock { joined > 0 && exclusiveOwner !== Thread.current } && tokens.count <= LanguageSession.maxStepRows
        guard riding else { return try exclusive { try state.feedAlone(tokens) } }
        try decoding {
            try submit {
                pendingStates.append(state)
                pendingTokens.append(contentsOf: tokens)
                pendingCounts.append(tokens.count)
            }
        }
    }

    private func submit(_ add: () -> Void) throws {
        condition.lock()
        defer { condition.unlock() }
        precondition(joined > 0, "a step from a generation that has not joined")
        add()
        submitted += 1
        let mine = stepsTaken + 1
        condition.broadcast()
        while stepsFinished < mine {
            guard !busy && submitted == joined && !(exclusiveWaiting > 0 && exclusiveSinceStep == 0) else {
                condition.wait()
                continue
            }
            swap(&pendingStates, &stepStates)
            swap(&pendingTokens, &stepTokens)
            swap(&pendingCounts, &stepCounts)
            submitted = 0
            stepsTaken += 1
            busy = true
            condition.unlock()
            let sequences = stepStates.count, tokens = stepTokens.count
            let outcome = runStep()
            condition.lock()
            busy = false
            exclusiveSinceStep = 0
            stepsFinished += 1
            if let outcome {
                failure = outcome
                failedStep = stepsFinished
            }
            let observer = stepObserver
            condition.broadcast()
            condition.unlock()
            observer?(sequences, tokens)
            condition.lock()
        }
        if failedStep == mine, let failure { throw failure }
    }

    /// The taken step through the model; only the thread that took it touches the step's arrays.
    private func runStep() -> (any Error)? {
        defer {
            // Emptied, so finished generations' caches are not held until the next step.
            stepStates.removeAll(keepingCapacity: true)
            stepTokens.removeAll(keepingCapacity: true)
            stepCounts.removeAll(keepingCapacity: true)
            stepSessions.removeAll(keepingCapacity: true)
        }
        do {
            try SessionState.stepTogether(stepTokens, counts: stepCounts, stepStates, sessions: &stepSessions)
            return nil
        } catch {
            return error
        }
    }
}
