import Foundation

// MARK: - Beam search (transformers' `_beam_search`)

/// Beam search and beam sampling, step for step as transformers 5.x runs them for one batch item:
///
/// 1. each running beam's logits -> float32 log-softmax -> logits processors (on log-probabilities);
/// 2. add the beam's running score; keep the best `2 * numBeams` (beam, token) candidates over all beams
///    (beam sampling: draw them without replacement from the softmax of these sums);
/// 3. a candidate "hits" if its token is EOS or the sequence reaches `maxNewTokens`; the best `numBeams`
///    candidates that did not hit become the running beams (hits get -1e9 so they sort last);
/// 4. candidates among the first `numBeams` that hit are scored `sum / generated_length ^ lengthPenalty`
///    (generated length = new tokens including the EOS) and merged with the kept hypotheses; the best
///    `numBeams` stay (never-filled slots keep score -1e9);
/// 5. stop when no running beam can improve on the kept hypotheses (the `earlyStopping` heuristic), when
///    all `numBeams` slots are finished with `.always`, or when every candidate hit.
///
/// The lengths are counted from the end of the context, which for BLIP-2 is `input_ids` (query
/// placeholders, BOS, prompt), exactly as transformers' `decoder_prompt_len`. Scores are float32 throughout,
/// with transformers' -1e9 sentinels, and ranking is by score with the lower index first on ties.
struct BeamSearch<State: DecoderState> {
    private let options: GenerationOptions
    private let contextIds: [Int]
    private let contextLength: Int
    private let maxLength: Int
    private let numBeams: Int
    private let candidateCount: Int
    private let eosTokenId: Int?
    private let lengthPenalty: Double
    private static var sentinel: Float { -1.0e9 }

    /// The model states; `stateSlot[beam]` indexes it (all beams share the root before the first token).
    private var states: [State]
    private var nextStates: [State] = []
    /// States no running beam continues this step: their memory takes the copies of beams that continue twice.
    private var spares: [State] = []
    /// The running beams' new tokens, fed to `states` in one step.
    private var stepTokens: [Int] = []
    private let stateSlot: Scratch<Int>
    private let childCount: Scratch<Int>

    /// Rows of `maxLength` ids: the context, then the beam's tokens.
    private var running: Scratch<Int>
    private var runningNext: Scratch<Int>
    private var runningScores: Scratch<Float>
    private var runningScoresNext: Scratch<Float>
    private let parentBeam: Scratch<Int>
    private let newToken: Scratch<Int>

    /// The kept hypotheses: rows, scores, generated lengths and whether each slot holds a finished one.
    private var finished: Scratch<Int>
    private var finishedNext: Scratch<Int>
    private var finishedScores: Scratch<Float>
    private var finishedScoresNext: Scratch<Float>
    private var finishedLengths: Scratch<Int>
    private var finishedLengthsNext: Scratch<Int>
    private var finishedFlags: Scratch<Bool>
    private var finishedFlagsNext: Scratch<Bool>

    private let candidateScores: Scratch<Float>
    private let candidateBeams: Scratch<Int>
    private let candidateTokens: Scratch<Int>
    private let candidateHits: Scratch<Bool>
    private let candidateJustFinished: Scratch<Bool>
    private let runningCandidateScores: Scratch<Float>
    private let finishedCandidateScores: Scratch<Float>
    private let mergedScores: Scratch<Float>
    private let selection: Scratch<Int>

    /// Allocated at the first step, when the vocabulary size is known.
    private var vocabularySize = 0
    private var logProbabilities: Scratch<Float>?
    private var processor: LogitsProcessor?
    private var sampling: BeamSampling?

    init(state: State, contextIds: [Int], options: GenerationOptions) throws {
        self.options = options
        self.contextIds = contextIds
        contextLength = contextIds.count
        maxLength = contextIds.count + options.maxNewTokens
        numBeams = options.numBeams
        candidateCount = 2 * options.numBeams  // transformers: max(2, 1 + number of EOS ids) * num_beams
        eosTokenId = options.eosTokenId
        lengthPenalty = options.lengthPenalty
        states = [state]
        nextStates.reserveCapacity(numBeams)
        spares.reserveCapacity(numBeams)
        stepTokens.reserveCapacity(numBeams)
        stateSlot = Scratch(count: numBeams, initialValue: 0)
        childCount = Scratch(count: numBeams, initialValue: 0)

        running = Scratch(count: numBeams * maxLength, initialValue: 0)
        runningNext = Scratch(count: numBeams * maxLength, initialValue: 0)
        finished = Scratch(count: numBeams * maxLength, initialValue: 0)
        finishedNext = Scratch(count: numBeams * maxLength, initialValue: 0)
        for beam in 0..<numBeams {
            for (i, id) in contextIds.enumerated() {
                running[beam * maxLength + i] = id
                finished[beam * maxLength + i] = id
            }
        }
        // Only the first beam is live at the start, so the identical copies cannot fill the beam.
        runningScores = Scratch(count: numBeams, initialValue: Self.sentinel)
        runningScores[0] = 0
        runningScoresNext = Scratch(count: numBeams, initialValue: 0)
        parentBeam = Scratch(count: numBeams, initialValue: 0)
        newToken = Scratch(count: numBeams, initialValue: 0)
        finishedScores = Scratch(count: numBeams, initialValue: Self.sentinel)
        finishedScoresNext = Scratch(count: numBeams, initialValue: 0)
        finishedLengths = Scratch(count: numBeams, initialValue: 0)
        finishedLengthsNext = Scratch(count: numBeams, initialValue: 0)
        finishedFlags = Scratch(count: numBeams, initialValue: false)
        finishedFlagsNext = Scratch(count: numBeams, initialValue: false)

        candidateScores = Scratch(count: candidateCount, initialValue: 0)
        candidateBeams = Scratch(count: candidateCount, initialValue: 0)
        candidateTokens = Scratch(count: candidateCount, initialValue: 0)
        candidateHits = Scratch(count: candidateCount, initialValue: false)
        candidateJustFinished = Scratch(count: candidateCount, initialValue: false)
        runningCandidateScores = Scratch(count: candidateCount, initialValue: 0)
        finishedCandidateScores = Scratch(count: candidateCount, initialValue: 0)
        mergedScores = Scratch(count: numBeams + candidateCount, initialValue: 0)
        selection = Scratch(count: numBeams, initialValue: 0)
    }

    mutating func run(shouldStop: (() -> Bool)? = nil) throws -> [GeneratedSequence] {
        var length = contextLength
        var heuristicUnsatisfied = true
        var step = 0
        while true {
            if let shouldStop, shouldStop() { throw GenerationError.cancelled(step: step) }
            try computeLogProbabilities(length: length, step: step)
            if var sampler = sampling {
                sampler.drawCandidates(logProbabilities: logProbabilities!.buffer, runningScores: runningScores.buffer,
                                           vocabularySize: vocabularySize, scores: candidateScores.buffer,
                                           beams: candidateBeams.buffer, tokens: candidateTokens.buffer)
                sampling = sampler
            } else {
                selectTopCandidates()
            }
            var allHit = true
            for k in 0..<candidateCount {
                let hit = candidateTokens[k] == eosTokenId || length + 1 >= maxLength
                candidateHits[k] = hit
                allHit = allHit && hit
            }
            selectRunningBeams(length: length)
            updateFinished(length: length, heuristicUnsatisfied: heuristicUnsatisfied)
            swap(&running, &runningNext)
            swap(&runningScores, &runningScoresNext)
            length += 1
            step += 1

            heuristicUnsatisfied = heuristicUnsatisfied && improvementPossible(length: length)
            var allFinished = true
            for j in 0..<numBeams { allFinished = allFinished && finishedFlags[j] }
            let beamsFull = allFinished && options.earlyStopping == .always
            if !heuristicUnsatisfied || beamsFull || allHit { break }
            try advanceStates()
        }
        return (0..<options.numReturnSequences).map { slot in
            let start = slot * maxLength + contextLength
            let tokens = Array(finished.buffer[start..<(start + finishedLengths[slot])])
            return GeneratedSequence(tokens: tokens, score: Double(finishedScores[slot]),
                                     finishedByEOS: eosTokenId != nil && tokens.last == eosTokenId)
        }
    }

    // MARK: Steps

    /// Fills each beam's row with its processed log-probabilities.
    private mutating func computeLogProbabilities(length: Int, step: Int) throws {
        for beam in 0..<numBeams {
            let slot = stateSlot[beam]
            if let earlier = (0..<beam).first(where: { stateSlot[$0] == slot }) {
                // Same state, same sequence (the first step): same row.
                let rows = logProbabilities!.buffer
                for t in 0..<vocabularySize { rows[beam * vocabularySize + t] = rows[earlier * vocabularySize + t] }
                continue
            }
            let logits = states[slot].logits
            if logProbabilities == nil { try prepare(vocabularySize: logits.count) }
            guard logits.count == vocabularySize else {
                throw GenerationError.logitsSizeChanged(expected: vocabularySize, actual: logits.count, step: step)
            }
            let row = UnsafeMutableBufferPointer(rebasing: logProbabilities!.buffer[(beam * vocabularySize)..<((beam + 1) * vocabularySize)])
            try logits.withUnsafeBufferPointer { try checkedCopy($0, into: row, step: step) }
            Softmax.logProbabilities(UnsafeBufferPointer(row), into: row)
            let sequence = UnsafeBufferPointer(rebasing: running.buffer[(beam * maxLength)..<(beam * maxLength + length)])
            processor!.process(row, sequence: sequence)
        }
    }

    private mutating func prepare(vocabularySize: Int) throws {
        guard vocabularySize > 0 else { throw GenerationError.emptyLogits }
        guard vocabularySize >= 2 else {
            throw GenerationError.vocabularyTooSmall(vocabularySize: vocabularySize, numBeams: numBeams)
        }
        self.vocabularySize = vocabularySize
        logProbabilities = Scratch(count: numBeams * vocabularySize, initialValue: 0)
        // transformers keeps (number of EOS ids + 1) tokens in beam sampling's warpers: 2 here either way.
        processor = LogitsProcessor(options: options, vocabularySize: vocabularySize, contextLength: contextLength,
                                    maxSequenceLength: maxLength, minTokensToKeep: 2)
        if options.doSample {
            sampling = BeamSampling(count: numBeams * vocabularySize, candidates: candidateCount, seed: options.seed)
        }
    }

    /// `torch.topk` over every beam's `log-prob + running score`, best first, lower flat index first on ties.
    private func selectTopCandidates() {
        let rows = logProbabilities!.buffer
        let scores = candidateScores.buffer, beams = candidateBeams.buffer, tokens = candidateTokens.buffer
        let k = candidateCount
        var filled = 0
        for beam in 0..<numBeams {
            let offset = runningScores[beam]
            let base = beam * vocabularySize
            for token in 0..<vocabularySize {
                let value = rows[base + token] + offset
                if filled == k && !(value > scores[k - 1]) { continue }
                var position = filled < k ? filled : k - 1
                while position > 0 && value > scores[position - 1] {
                    scores[position] = scores[position - 1]
                    beams[position] = beams[position - 1]
                    tokens[position] = tokens[position - 1]
                    position -= 1
                }
                scores[position] = value
                beams[position] = beam
                tokens[position] = token
                if filled < k { filled += 1 }
            }
        }
    }

    /// transformers' `_get_running_beams_for_next_iteration`.
    private func selectRunningBeams(length: Int) {
        for k in 0..<candidateCount {
            runningCandidateScores[k] = candidateScores[k] + (candidateHits[k] ? Self.sentinel : 0)
        }
        Ordering.topIndices(UnsafeBufferPointer(runningCandidateScores.buffer), into: selection.buffer)
        for j in 0..<numBeams {
            let k = selection[j]
            parentBeam[j] = candidateBeams[k]
            newToken[j] = candidateTokens[k]
            runningScoresNext[j] = runningCandidateScores[k]
            copyRow(from: running, candidateBeams[k], to: runningNext, j, count: length)
            runningNext[j * maxLength + length] = candidateTokens[k]
        }
    }

    /// transformers' `_update_finished_beams`.
    private mutating func updateFinished(length: Int, heuristicUnsatisfied: Bool) {
        let generatedLength = length + 1 - contextLength
        let denominator = Float(pow(Double(generatedLength), lengthPenalty))
        var allFinished = true
        for j in 0..<numBeams { allFinished = allFinished && finishedFlags[j] }
        let beamsFull = allFinished && options.earlyStopping == .always
        for k in 0..<candidateCount {
            let justFinished = candidateHits[k] && k < numBeams
            var score = candidateScores[k] / denominator
            score += beamsFull ? Self.sentinel : 0
            score += heuristicUnsatisfied ? 0 : Self.sentinel
            score += justFinished ? 0 : Self.sentinel
            candidateJustFinished[k] = justFinished
            finishedCandidateScores[k] = score
        }
        for j in 0..<numBeams { mergedScores[j] = finishedScores[j] }
        for k in 0..<candidateCount { mergedScores[numBeams + k] = finishedCandidateScores[k] }
        Ordering.topIndices(UnsafeBufferPointer(mergedScores.buffer), into: selection.buffer)
        for j in 0..<numBeams {
            let source = selection[j]
            if source < numBeams {
                copyRow(from: finished, source, to: finishedNext, j, count: contextLength + finishedLengths[source])
                finishedScoresNext[j] = finishedScores[source]
                finishedLengthsNext[j] = finishedLengths[source]
                finishedFlagsNext[j] = finishedFlags[source]
            } else {
                let k = source - numBeams
                copyRow(from: running, candidateBeams[k], to: finishedNext, j, count: length)
                finishedNext[j * maxLength + length] = candidateTokens[k]
                finishedScoresNext[j] = finishedCandidateScores[k]
                finishedLengthsNext[j] = generatedLength
                finishedFlagsNext[j] = candidateJustFinished[k]
            }
        }
        swap(&finished, &finishedNext)
        swap(&finishedScores, &finishedScoresNext)
        swap(&finishedLengths, &finishedLengthsNext)
        swap(&finishedFlags, &finishedFlagsNext)
    }

    /// transformers' `_check_early_stop_heuristic` for one step (`length` includes the token just chosen).
    private func improvementPossible(length: Int) -> Bool {
        let hypotheticalLength = options.earlyStopping == .never && lengthPenalty > 0
            ? maxLength - contextLength : length - contextLength
        let bestRunning = runningScores[0] / Float(pow(Double(hypotheticalLength), lengthPenalty))
        var worstFinished = Float.infinity
        for j in 0..<numBeams { worstFinished = min(worstFinished, finishedScores[j]) }
        for j in 0..<numBeams where bestRunning > (finishedFlags[j] ? worstFinished : Self.sentinel) {
            return true
        }
        return false
    }

    /// Gives every new running beam its parent's state (copied, into the memory of a state no beam continues,
    /// when the parent has several children) and feeds all the beams their new tokens in one step.
    private mutating func advanceStates() throws {
        for slot in 0..<states.count { childCount[slot] = 0 }
        for j in 0..<numBeams { childCount[stateSlot[parentBeam[j]]] += 1 }
        spares.removeAll(keepingCapacity: true)
        for slot in 0..<states.count where childCount[slot] == 0 { spares.append(states[slot]) }
        nextStates.removeAll(keepingCapacity: true)
        for j in 0..<numBeams {
            let slot = stateSlot[parentBeam[j]]
            childCount[slot] -= 1
            // The last child takes the parent itself; the others copy it first, before anything is fed to it.
            nextStates.append(childCount[slot] > 0 ? try states[slot].fork(into: spares.popLast()) : states[slot])
        }
        swap(&states, &nextStates)
        nextStates.removeAll(keepingCapacity: true)
        spares.removeAll(keepingCapacity: true)
        stepTokens.removeAll(keepingCapacity: true)
        for j in 0..<numBeams {
            stateSlot[j] = j
            stepTokens.append(newToken[j])
        }
        try State.append(stepTokens, to: states)
    }

    private func copyRow(from source: Scratch<Int>, _ sourceRow: Int, to destination: Scratch<Int>, _ destinationRow: Int,
                         count: Int) {
        let from = sourceRow * maxLength, to = destinationRow * maxLength
        for i in 0..<count { destination[to + i] = source[from + i] }
    }
}

// MARK: - Beam sampling

/// transformers' beam sampling: `multinomial(softmax(log_probs + running scores), 2 * num_beams)` without
/// replacement over all beams, then the draws sorted by their summed log-probability.
struct BeamSampling {
    private var random: SamplingRandom
    private let sums: Scratch<Float>
    private let probabilities: Scratch<Float>
    private let picked: Scratch<Bool>
    private let draws: Scratch<Int>

    init(count: Int, candidates: Int, seed: UInt64) {
        random = SamplingRandom(seed: seed)
        sums = Scratch(count: count, initialValue: 0)
        probabilities = Scratch(count: count, initialValue: 0)
        picked = Scratch(count: count, initialValue: false)
        draws = Scratch(count: candidates, initialValue: 0)
    }

    mutating func drawCandidates(logProbabilities: UnsafeMutableBufferPointer<Float>,
                                 runningScores: UnsafeMutableBufferPointer<Float>, vocabularySize: Int,
                                 scores: UnsafeMutableBufferPointer<Float>, beams: UnsafeMutableBufferPointer<Int>,
                                 tokens: UnsafeMutableBufferPointer<Int>) {
        let sums = self.sums.buffer, probabilities = self.probabilities.buffer
        for i in 0..<sums.count { sums[i] = logProbabilities[i] + runningScores[i / vocabularySize] }
        Softmax.probabilities(UnsafeBufferPointer(sums), into: probabilities)
        for d in 0..<draws.count {
            var total = 0.0
            for i in 0..<probabilities.count where probabilities[i] > 0 { total += Double(probabilities[i]) }
            var index: Int
            if total > 0 {
                index = SingleSequenceDecoder.draw(UnsafeBufferPointer(probabilities), total: total, random: &random)
            } else {
                // Fewer positive weights than draws: torch takes zero-weight entries; we take the best of them.
                index = -1
                for i in 0..<sums.count where !picked[i] && (index < 0 || sums[i] > sums[index]) { index = i }
            }
            picked[index] = true
            probabilities[index] = 0
            draws[d] = index
        }
        // Best first; a stable insertion sort keeps draw order among equal sums.
        for d in 0..<draws.count {
            let index = draws[d]
            picked[index] = false
            let value = sums[index]
            var position = d
            while position > 0 && value > scores[position - 1] {
                scores[position] = scores[position - 1]
                beams[position] = beams[position - 1]
                tokens[position] = tokens[position - 1]
                position -= 1
            }
            scores[position] = value
            beams[position] = index / vocabularySize
            tokens[position] = index % vocabularySize
        }
    }
}
