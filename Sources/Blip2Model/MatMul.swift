import CKernels
import Dispatch
import Foundation

// MARK: - The matrix product seam
//
// Every linear layer in the model goes through `MatMul.linear`. This is the plain reference version:
// dequantize one weight row, dot it with every token. The SIMD kernels replace the body, not the callers.

public enum MatMul {
    /// Worker threads for the products (rows are split between them). Set once before running.
    nonisolated(unsafe) public static var threads = ProcessInfo.processInfo.activeProcessorCount

    /// y[t, o] = sum_i x[t, i] * W[o, i] + b[o] for t < tokens. x: [tokens, in], y: [tokens, out].
    public static func linear(_ x: UnsafePointer<Float>, tokens: Int, _ layer: Linear, into y: UnsafeMutablePointer<Float>) {
        let w = layer.weight
        // Small products are not worth waking threads for.
        let parts = w.rows * w.cols * tokens < 1 << 16 ? 1 : max(1, min(threads, w.rows))
        if parts == 1 {
            rows(0..<w.rows, x, tokens: tokens, layer, into: y)
        } else {
            DispatchQueue.concurrentPerform(iterations: parts) { part in
                rows((w.rows * part / parts)..<(w.rows * (part + 1) / parts), x, tokens: tokens, layer, into: y)
            }
        }
    }

    private static func rows(_ range: Range<Int>, _ x: UnsafePointer<Float>, tokens: Int, _ layer: Linear, into y: UnsafeMutablePointer<Float>) {
        let w = layer.weight
        let n = w.cols
        let row = UnsafeMutablePointer<Float>.allocate(capacity: n)
        defer { row.deallocate() }
        for o in range {
            let rowPointer: UnsafePointer<Float>
            if w.type == .f32 {
                rowPointer = (w.data + o * w.rowBytes).assumingMemoryBound(to: Float.self)
            } else {
                w.dequantizeRow(o, into: row)
                rowPointer = UnsafePointer(row)
            }
            let b = layer.bias?[o] ?? 0
            for t in 0..<tokens {
                y[t * w.rows + o] = dot(x + t * n, rowPointer, n) + b
            }
        }
    }

    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = SIMD8<Float>()
        var i = 0
        while i + 8 <= n {
            let va = UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self)
            let vb = UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self)
            acc = acc.addingProduct(va, vb)
            i += 8
        }
        var sum = acc.sum()
        while i < n {
            sum += a[i] * b[i]
            i += 1
        }
        return sum
    }
}
