import Blip2Compute
import Blip2Configs
import Blip2Core
import Blip2Generation
import Blip2ModelFile
import Foundation

// MARK: - Calibration: the importance matrix of a model on real inputs (`blip2 imatrix`)
//
// The model runs as it does for `caption` and `ask` (greedy, default lengths) while an observer on the
// compute context adds up x² per input column of every product whose weight a quantizer fits. Each image
// is encoded once; each prompt then runs the language model over the query embeddings and the prompt in
// one prefill and feeds each generated token but the last, so every activation is counted exactly once.

/// Per input column of every linear weight, the sum of x² and the number of rows seen.
public final class ActivationStatistics: ProductObserver {
    private let names: [String]
    private let index: [String: Int]
    /// Double sums: a full-size run adds up about a hundred thousand rows per column.
    private var sums: [[Double]]
    private var tokens: [Int]

    /// Statistics for `weights` (name, inputs); products of any other weight are not counted.
    public init(weights: [(name: String, columns: Int)]) {
        names = weights.map(\.name)
        index = Dictionary(uniqueKeysWithValues: weights.enumerated().map { ($1.name, $0) })
        sums = weights.map { [Double](repeating: 0, count: $0.columns) }
        tokens = [Int](repeating: 0, count: weights.count)
    }

    /// The weights whose inputs a quantizer's weighted fit uses: every linear weight, and the output head
    /// when it is stored apart from the token embeddings.
    public static func fittedWeights(of config: Blip2Config) throws -> [(name: String, columns: Int)] {
        try WeightManifest(config: config).weights
            .filter { $0.role == .linearWeight || $0.role == .outputHead }
            .map { ($0.name, $0.shape[1]) }
    }

    public func observe(input x: UnsafePointer<Float>, tokens count: Int, weight: WeightMatrix) {
        guard let i = index[weight.name] else { return }
        let cols = weight.cols
        precondition(cols == sums[i].count, "\(weight.name): \(cols) inputs, the statistics were sized for \(sums[i].count)")
        sums[i].withUnsafeMutableBufferPointer { sum in
            for t in 0..<count {
                let row = x + t * cols
                for c in 0..<cols {
                    let v = Double(row[c])
                    sum[c] += v * v
                }
            }
        }
        tokens[i] += count
    }

    /// Rows seen per weight.
    public func tokenCount(_ name: String) -> Int { index[name].map { tokens[$0] } ?? 0 }

    /// The means, for every weight that saw at least one row.
    public func matrix(source: ImportanceMatrix.Source) -> ImportanceMatrix {
        var entries: [String: ImportanceMatrix.Entry] = [:]
        for (i, name) in names.enumerated() where tokens[i] > 0 {
            let n = Double(tokens[i])
            entries[name] = .init(values: sums[i].map { Float($0 / n) }, tokens: tokens[i])
        }
        return ImportanceMatrix(entries: entries, source: source)
    }
}

/// What `blip2 imatrix` runs on every image.
public struct CalibrationPrompts: Sendable, Equatable {
    /// Questions asked of every image as `Question: {q} Answer:`, besides the caption.
    public var questions: [String]
    public var captionTokens = Blip2Task.caption.defaultMaxNewTokens
    public var answerTokens = Blip2Task.question.defaultMaxNewTokens

    /// A small spread of what BLIP-2 is asked in practice: what, which colour, where, how many.
    public static let defaultQuestions = [
        "What is in the picture?",
        "What color is the main object?",
        "Where was this photo taken?",
        "How many people are there?",
    ]

    public init(questions: [String] = Self.defaultQuestions) {
        self.questions = questions
    }

    /// The prompts in the order they run: the caption (nil) first, then each question.
    public var prompts: [(prompt: String?, maxNewTokens: Int)] {
        [(nil, captionTokens)] + questions.map { (Prompts.question($0), answerTokens) }
    }
}

/// One prompt's generation during calibration, for progress and `--json`.
public struct CalibrationRun: Sendable {
    public var prompt: String?
    public var promptTokens: Int
    public var tokens: [Int]
    public var text: String
}

extension Pipeline {
    /// Runs `prompts` on `image` with `statistics` observing every product of the model's compute context.
    /// The image's vision and Q-Former products are counted once, whatever the number of prompts.
    public func calibrate(pixels: [Float], prompts: CalibrationPrompts, statistics: ActivationStatistics) throws -> [CalibrationRun] {
        let compute = model.compute
        precondition(compute.productObserver == nil, "one calibration at a time per compute context")
        compute.productObserver = statistics
        defer { compute.productObserver = nil }
        let image = encode(pixels: pixels)
        var runs: [CalibrationRun] = []
        for (prompt, maxNewTokens) in prompts.prompts {
            let ids = promptIds(prompt)
            try checkFits(promptIds: ids, maxNewTokens: maxNewTokens)
            let state: any DecoderState, context: [Int]
            if model.isEncoderDecoder {
                (state, context) = try startState(image: image, promptIds: ids, newTokens: maxNewTokens)
            } else {
                let session = try makeState(capacity: numQueryTokens + ids.count + maxNewTokens)
                // One prefill: feeding the image and the prompt apart would run the head on the image's last
                // position too, a row nothing reads.
                try session.feed(embeddings: image.embeddings + model.tokenEmbeddings(ids), ids: ids)
                (state, context) = (session, contextIds(promptIds: ids))
            }
            var options = GenerationOptions()
            options.maxNewTokens = maxNewTokens
            var timings = StageTimings()
            let sequence = try decode(from: state, contextIds: context, options: options,
                                      onText: nil, shouldStop: nil, timings: &timings)
            let tokens = sequence.first?.tokens ?? []
            runs.append(CalibrationRun(prompt: prompt, promptTokens: ids.count, tokens: tokens, text: tokenizer.decodeStripped(tokens)))
        }
        return runs
    }
}
