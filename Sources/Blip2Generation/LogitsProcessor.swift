import Foundation

// MARK: - Logits processors, in transformers' order

/// The per-step score transforms of transformers' `_get_logits_processor`, applied in its order:
/// repetition penalty, no-repeat n-grams, minimum length (EOS suppressed), then, only when sampling,
/// temperature, top-k and top-p.
///
/// Greedy search and sampling apply them to the raw logits; beam search applies them to log-probabilities
/// (so a repetition penalty there always multiplies, log-probabilities being negative).
/// All arithmetic is Float32 like transformers' (a Python float operand is rounded to float32 first).
struct LogitsProcessor {
    let vocabularySize: Int
    let contextLength: Int
    private let repetitionPenalty: Float?
    private let noRepeatNgramSize: Int
    private let minNewTokens: Int
    private let eosTokenId: Int?
    private let temperature: Float?
    private let topK: Int
    private let topPThreshold: Float?
    private let minTokensToKeep: Int

    /// Penalised scores gathered before any is written, so a token seen twice is penalised once.
    private let gathered: Scratch<Float>
    /// Top-k's min-heap of the k largest scores.
    private let heap: Scratch<Float>
    /// Top-p's token order and probabilities.
    private let order: Scratch<Int32>
    private let probabilities: Scratch<Float>

    /// `minTokensToKeep`: 1 for sampling, 2 for beam sampling (transformers keeps EOS count + 1 there).
    init(options: GenerationOptions, vocabularySize: Int, contextLength: Int, maxSequenceLength: Int,
         minTokensToKeep: Int) {
        self.vocabularySize = vocabularySize
        self.contextLength = contextLength
        repetitionPenalty = options.repetitionPenalty != 1 ? Float(options.repetitionPenalty) : nil
        noRepeatNgramSize = options.noRepeatNgramSize
        minNewTokens = options.eosTokenId != nil ? options.minNewTokens : 0
        eosTokenId = options.eosTokenId
        self.minTokensToKeep = minTokensToKeep
        let sampling = options.doSample
        temperature = sampling && options.temperature != 1 ? Float(options.temperature) : nil
        // transformers: top_k = max(top_k, min_tokens_to_keep), then at most the vocabulary.
        topK = sampling && options.topK != 0 ? min(max(options.topK, minTokensToKeep), vocabularySize) : 0
        topPThreshold = sampling && options.topP < 1 ? Float(1 - options.topP) : nil
        gathered = Scratch(count: repetitionPenalty != nil ? maxSequenceLength : 0, initialValue: 0)
        heap = Scratch(count: topK, initialValue: 0)
        order = Scratch(count: topPThreshold != nil ? vocabularySize : 0, initialValue: 0)
        probabilities = Scratch(count: topPThreshold != nil ? vocabularySize : 0, initialValue: 0)
    }

    /// Transforms `scores` (one row of `vocabularySize`) for the token after `sequence` (context + generated).
    func process(_ scores: UnsafeMutableBufferPointer<Float>, sequence: UnsafeBufferPointer<Int>) {
        if let penalty = repetitionPenalty { applyRepetitionPenalty(penalty, scores, sequence) }
        if noRepeatNgramSize > 0 { banRepeatedNgrams(scores, sequence) }
        if let eos = eosTokenId, sequence.count - contextLength < minNewTokens, eos < vocabularySize {
            scores[eos] = -.infinity
        }
        if let temperature {
            for i in 0..<scores.count { scores[i] = scores[i] / temperature }
        }
        if topK > 0 && topK < vocabularySize { keepTopK(scores) }
        if let threshold = topPThreshold { keepTopP(scores, threshold: threshold) }
    }

    // MARK: Repetition penalty (RepetitionPenaltyLogitsProcessor)

    private func applyRepetitionPenalty(_ penalty: Float, _ scores: UnsafeMutableBufferPointer<Float>,
                                        _ sequence: UnsafeBufferPointer<Int>) {
        let gathered = self.gathered.buffer
        // Ids beyond the logits (e.g. a larger embedding vocabulary) cannot be generated: skipped, as
        // transformers clamps them to a dropped column.
        for (i, id) in sequence.enumerated() where id < vocabularySize {
            let score = scores[id]
            gathered[i] = score < 0 ? score * penalty : score / penalty
        }
        for (i, id) in sequence.enumerated() where id < vocabularySize {
            scores[id] = gathered[i]
        }
    }

    // MARK: No-repeat n-grams (NoRepeatNGramLogitsProcessor)

    /// Every earlier window whose first n-1 ids equal the last n-1 ids bans its n-th id.
    private func banRepeatedNgrams(_ scores: UnsafeMutableBufferPointer<Float>, _ sequence: UnsafeBufferPointer<Int>) {
        let n = noRepeatNgramSize
        let length = sequence.count
        guard length >= n else { return }
        let prefixStart = length - (n - 1)
        for start in 0...(length - n) {
            var matches = true
            for j in 0..<(n - 1) where sequence[start + j] != sequence[prefixStart + j] {
                matches = false
                break
            }
            let banned = sequence[start + n - 1]
            if matches && banned < vocabularySize { scores[banned] = -.infinity }
        }
    }

    // MARK: Top-k (TopKLogitsWarper)

    /// Removes scores strictly below the k-th largest (ties with it stay).
    private func keepTopK(_ scores: UnsafeMutableBufferPointer<Float>) {
        let k = topK
        let heap = self.heap.buffer
        for i in 0..<k { heap[i] = scores[i] }
        for i in stride(from: k / 2 - 1, through: 0, by: -1) { siftDown(heap, i, k) }
        for i in k..<scores.count where scores[i] > heap[0] {
            heap[0] = scores[i]
            siftDown(heap, 0, k)
        }
        let kth = heap[0]
        for i in 0..<scores.count where scores[i] < kth { scores[i] = -.infinity }
    }

    /// Min-heap sift-down over `heap[0..<count]`.
    private func siftDown(_ heap: UnsafeMutableBufferPointer<Float>, _ start: Int, _ count: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1
            if left >= count { return }
            var smallest = left
            if left + 1 < count && heap[left + 1] < heap[left] { smallest = left + 1 }
            if heap[smallest] >= heap[parent] { return }
            heap.swapAt(parent, smallest)
            parent = smallest
        }
    }

    // MARK: Top-p (TopPLogitsWarper)

    /// transformers sorts ascending, takes the float32 softmax, accumulates it (torch's CPU cumsum sums in
    /// double, rounding each partial sum to float32) and removes every token whose cumulative probability is
    /// `<= 1 - top_p` (compared in float32), except the `minTokensToKeep` most likely.
    /// Walking down from the most likely token, the ascending partial sum at a token is the total minus the
    /// mass above it; only tokens with a finite score are sorted, since the others are removed anyway.
    private func keepTopP(_ scores: UnsafeMutableBufferPointer<Float>, threshold: Float) {
        let probabilities = self.probabilities.buffer
        let total = Softmax.probabilities(UnsafeBufferPointer(scores), into: probabilities)
        var count = 0
        for i in 0..<scores.count where scores[i] > -.infinity {
            order[count] = Int32(i)
            count += 1
        }
        let ranked = order.prefix(count)
        Ordering.sortDescending(ranked, by: UnsafeBufferPointer(scores))
        var massAbove = 0.0
        for rank in 0..<count {
            let token = Int(ranked[rank])
            if rank >= minTokensToKeep && Float(total - massAbove) <= threshold {
                for removed in rank..<count { scores[Int(ranked[removed])] = -.infinity }
                break
            }
            massAbove += Double(probabilities[token])
        }
    }
}

// MARK: - Softmax in Float32

/// Softmax and log-softmax as torch computes them on CPU: subtract the maximum, exponentiate in float32.
/// The sum of exponentials is accumulated in double, which stays within rounding of torch's vectorised
/// float32 reduction for any vocabulary size.
enum Softmax {
    /// Writes `softmax(x)` to `output` and returns the double sum of the float32 probabilities.
    /// Needs at least one finite value in `x`.
    @discardableResult
    static func probabilities(_ x: UnsafeBufferPointer<Float>, into output: UnsafeMutableBufferPointer<Float>) -> Double {
        let maximum = max(x)
        var sum = 0.0
        for i in 0..<x.count {
            let e = expf(x[i] - maximum)
            output[i] = e
            sum += Double(e)
        }
        let scale = 1 / Float(sum)
        var total = 0.0
        for i in 0..<x.count {
            output[i] *= scale
            total += Double(output[i])
        }
        return total
    }

    /// Writes `log_softmax(x)` to `output`: `(x - max) - log(sum(exp(x - max)))`. Needs one finite value.
    static func logProbabilities(_ x: UnsafeBufferPointer<Float>, into output: UnsafeMutableBufferPointer<Float>) {
        let maximum = max(x)
        var sum = 0.0
        for i in 0..<x.count { sum += Double(expf(x[i] - maximum)) }
        let logSum = logf(Float(sum))
        for i in 0..<x.count { output[i] = (x[i] - maximum) - logSum }
    }

    static func max(_ x: UnsafeBufferPointer<Float>) -> Float {
        var maximum = -Float.infinity
        for value in x where value > maximum { maximum = value }
        return maximum
    }
}

// MARK: - Small sorting helpers (no allocation)

enum Ordering {
    /// Heapsort of token indices by descending `key`.
    static func sortDescending(_ indices: UnsafeMutableBufferPointer<Int32>, by key: UnsafeBufferPointer<Float>) {
        let count = indices.count
        guard count > 1 else { return }
        // A min-heap on key leaves the smallest at the end: descending order in place.
        func siftDown(_ start: Int, _ end: Int) {
            var parent = start
            while true {
                let left = 2 * parent + 1
                if left >= end { return }
                var smallest = left
                if left + 1 < end && key[Int(indices[left + 1])] < key[Int(indices[left])] { smallest = left + 1 }
                if key[Int(indices[smallest])] >= key[Int(indices[parent])] { return }
                indices.swapAt(parent, smallest)
                parent = smallest
            }
        }
        for i in stride(from: count / 2 - 1, through: 0, by: -1) { siftDown(i, count) }
        for end in stride(from: count - 1, to: 0, by: -1) {
            indices.swapAt(0, end)
            siftDown(0, end)
        }
    }

    /// Writes into `selected` the indices of the `selected.count` largest `values`, largest first, the lower
    /// index first among equal values. For the small candidate lists of beam search.
    static func topIndices(_ values: UnsafeBufferPointer<Float>, into selected: UnsafeMutableBufferPointer<Int>) {
        let k = selected.count
        var filled = 0
        for i in 0..<values.count {
            let value = values[i]
            if filled == k && !(value > values[selected[k - 1]]) { continue }
            var position = filled < k ? filled : k - 1
            while position > 0 && value > values[selected[position - 1]] {
                selected[position] = selected[position - 1]
                position -= 1
            }
            selected[position] = i
            if filled < k { filled += 1 }
        }
    }
}
