import Blip2Generation
import Blip2ModelFile
import Foundation
import Testing
@testable import Blip2Convert
@testable import Blip2Pipeline

/// How far q8 and q4 files drift from f32: first-step logits and greedy tokens on every fixture task.
///
/// The bounds come from outside the forward pass. q8 must stay within a quarter of the logits' spread. For
/// q4, small weight perturbations move the logits linearly, so q4 may drift at most as much more than q8 as
/// its weights are perturbed more: the ratio of the relative RMS weight errors the converter measured
/// (over the weights stored differently in the two files), with 50% headroom for second-order effects.
/// Files that store every weight alike must compute alike.
@Suite struct QuantizationDriftTests {
    /// Relative RMS weight error over `names`, parameter-weighted, as the converter measured it.
    static func weightError(_ pipeline: Pipeline, names: Set<String>) throws -> Double {
        let provenance = try pipeline.model.file.decode(QuantizationProvenance.self, section: MetadataSectionName.quantization)
        var squared = 0.0, count = 0
        for record in pipeline.model.file.tensors where names.contains(record.name) {
            let error = try #require(provenance.tensors[record.name]?.error)
            squared += error * error * Double(record.elementCount)
            count += record.elementCount
        }
        return count > 0 ? (squared / Double(count)).squareRoot() : 0
    }

    @Test func q8AndQ4DriftFromF32() throws {
        var lines = ["model                  q8 max|dlogit|  q8 tokens   q4 max|dlogit|  q4 tokens   (logit std)  weight error q4/q8"]
        for name in fixtureNames {
            let reference = try Reference.load(name)
            let pixels = try referencePixels(name, reference)
            var drift: [WeightPrecision: (Float, Int, Int)] = [:]
            var scale: Float = 0
            let baseline = try Pipelines.shared.pipeline(name)
            let baseImage = baseline.encode(pixels: pixels)
            for weights in [WeightPrecision.q8, .q4] {
                let pipeline = try Pipelines.shared.pipeline(name, weights: weights)
                let image = pipeline.encode(pixels: pixels)
                var worst: Float = 0, agree = 0, total = 0
                for task in reference.tasks.values {
                    var options = GenerationOptions()
                    options.maxNewTokens = 10
                    let ids = baseline.promptIds(task.prompt)
                    let exact = try baseline.stepLogits(image: baseImage, promptIds: ids, tokens: [0])
                    let quantized = try pipeline.stepLogits(image: image, promptIds: ids, tokens: [0])
                    worst = max(worst, zip(exact, quantized).map { abs($0 - $1) }.max()!)
                    let mean = exact.reduce(0, +) / Float(exact.count)
                    scale = max(scale, (exact.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(exact.count)).squareRoot())
                    let a = try baseline.generate(image: baseImage, prompt: task.prompt, options: options).sequences[0].tokens
                    let b = try pipeline.generate(image: image, prompt: task.prompt, options: options).sequences[0].tokens
                    agree += zip(a, b).prefix { $0 == $1 }.count
                    total += a.count
                }
                drift[weights] = (worst, agree, total)
            }
            let q8 = try Pipelines.shared.pipeline(name, weights: .q8), q4 = try Pipelines.shared.pipeline(name, weights: .q4)
            let differing = Set(zip(q8.model.file.tensors, q4.model.file.tensors).filter { $0.type != $1.type }.map(\.0.name))
            let ratio = differing.isEmpty ? 1 : try Self.weightError(q4, names: differing) / Self.weightError(q8, names: differing)
            let (d8, a8, t8) = drift[.q8]!, (d4, a4, t4) = drift[.q4]!
            lines.append(name.padding(toLength: 22, withPad: " ", startingAt: 0)
                         + String(format: " %14.4f %6d/%-4d %14.4f %6d/%-4d %10.3f %12.1f", d8, a8, t8, d4, a4, t4, scale, ratio))
            #expect(d8 < 0.25 * scale, "\(name): q8 logits drift \(d8) against a logit spread of \(scale)")
            if differing.isEmpty {
                #expect(d4 == d8, "\(name): the q8 and q4 files store every weight alike, yet compute differently")
            } else {
                #expect(ratio > 4, "\(name): q4 weights should be several times less precise than q8 (ratio \(ratio))")
                #expect(Double(d4) <= 1.5 * ratio * Double(d8), "\(name): q4 drifts \(d4), over 1.5 x \(ratio) x the q8 drift \(d8)")
            }
        }
        print(lines.joined(separator: "\n"))
    }

    /// The super-block files obey the same bound as q4: their logits drift at most 1.5 x (their weight error
    /// over q8's) x q8's drift, on every fixture and task.
    @Test(arguments: [WeightPrecision.q4k, .q3k, .q6k])
    func superBlockFilesDriftByTheirWeightError(weights: WeightPrecision) throws {
        for name in fixtureNames {
            let reference = try Reference.load(name)
            let pixels = try referencePixels(name, reference)
            let baseline = try Pipelines.shared.pipeline(name)
            let baseImage = baseline.encode(pixels: pixels)
            var worst: [WeightPrecision: Float] = [:]
            for precision in [WeightPrecision.q8, weights] {
                let pipeline = try Pipelines.shared.pipeline(name, weights: precision)
                let image = pipeline.encode(pixels: pixels)
                for task in reference.tasks.values {
                    let ids = baseline.promptIds(task.prompt)
                    let exact = try baseline.stepLogits(image: baseImage, promptIds: ids, tokens: [0])
                    let quantized = try pipeline.stepLogits(image: image, promptIds: ids, tokens: [0])
                    worst[precision] = max(worst[precision] ?? 0, zip(exact, quantized).map { abs($0 - $1) }.max()!)
                }
            }
            let q8 = try Pipelines.shared.pipeline(name, weights: .q8), other = try Pipelines.shared.pipeline(name, weights: weights)
            let differing = Set(zip(q8.model.file.tensors, other.model.file.tensors).filter { $0.type != $1.type }.map(\.0.name))
            guard !differing.isEmpty else {
                // No width here is a multiple of 32: both files fall back to f16 everywhere.
                #expect(worst[weights] == worst[.q8], "\(name): the files store every weight alike, yet compute differently")
                continue
            }
            let ratio = try Self.weightError(other, names: differing) / Self.weightError(q8, names: differing)
            print("\(name) \(weights): max |dlogit| \(worst[weights]!) (q8 \(worst[.q8]!)), weight error \(ratio) x q8's")
            #expect(ratio > 1, "\(name): \(weights) weights should be less precise than q8 (ratio \(ratio))")
            #expect(Double(worst[weights]!) <= 1.5 * ratio * Double(worst[.q8]!),
                    "\(name): \(weights) drifts \(worst[weights]!), over 1.5 x \(ratio) x the q8 drift \(worst[.q8]!)")
        }
    }
}
