import Blip2Generation
import Foundation
import Testing
@testable import Blip2Convert
@testable import Blip2Pipeline

/// How far q8 and q4 files drift from f32: first-step logits and greedy tokens on every fixture task.
/// Prints the table it measures; asserts that q8 stays much closer than q4 and both stay bounded.
@Suite struct QuantizationDriftTests {
    @Test func q8AndQ4DriftFromF32() throws {
        var lines = ["model                  q8 max|dlogit|  q8 tokens   q4 max|dlogit|  q4 tokens   (logit std)"]
        var q8Total = 0.0, q4Total = 0.0
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
            let (d8, a8, t8) = drift[.q8]!, (d4, a4, t4) = drift[.q4]!
            q8Total += Double(d8)
            q4Total += Double(d4)
            lines.append(name.padding(toLength: 22, withPad: " ", startingAt: 0)
                         + String(format: " %14.4f %6d/%-4d %14.4f %6d/%-4d %10.3f", d8, a8, t8, d4, a4, t4, scale))
            #expect(d8 < 0.25 * scale, "\(name): q8 logits drift \(d8) against a logit spread of \(scale)")
        }
        print(lines.joined(separator: "\n"))
        #expect(q8Total < q4Total)
    }
}
