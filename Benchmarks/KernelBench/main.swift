import Blip2Core
import Blip2Model
import CKernels
import Foundation

// A quick look at the products on the real shapes, through the same seam the model uses
// (MatMul.linear: activation quantization, worker pool, kernels). Release builds only:
//   swift build -c release --product blip2-kernel-bench && .build/release/blip2-kernel-bench [--threads 1,2] [--isa avx2]
// matvec: OPT-2.7B fc1 shape (2560 -> 10240) at one token, reported as weight bytes streamed per second;
// matmul: ViT-g fc1 shape (1408 -> 6144) at 257 tokens, reported as 2 * multiply-adds per second.

func argument(_ name: String) -> String? {
    let args = CommandLine.arguments
    guard let i = args.firstIndex(of: name), i + 1 < args.count else { return nil }
    return args[i + 1]
}

let threadCounts = (argument("--threads") ?? "1,2").split(separator: ",").compactMap { Int($0) }
let repeats = Int(argument("--repeats") ?? "") ?? 7
if let name = argument("--isa") {
    guard let isa = KernelISA(rawValue: name) else { fatalError("unknown instruction set \(name)") }
    try MatMul.select(isa)
} else {
    try MatMul.configureFromEnvironment()
}

/// Random weights of `type` for a [rows, cols] matrix, quantized by the converter's own routines.
func weights(_ type: ElementType, rows: Int, cols: Int) -> UnsafeMutableRawPointer {
    let bytes = type.byteCount(elements: rows * cols)!
    let data = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 16384)
    var state: UInt64 = 0x1234_5678
    let row = UnsafeMutablePointer<Float>.allocate(capacity: cols)
    defer { row.deallocate() }
    for r in 0..<rows {
        for i in 0..<cols {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            row[i] = Float(Int64(bitPattern: state >> 11) % 2000) * 1e-5
        }
        let out = data + r * (bytes / rows)
        switch type {
        case .f32: out.copyMemory(from: row, byteCount: cols * 4)
        case .f16: blip2_f32_to_f16_row(row, out.assumingMemoryBound(to: UInt16.self), cols)
        case .q8: blip2_quantize_row_q8(row, out.assumingMemoryBound(to: blip2_block_q8.self), cols)
        case .q4: blip2_quantize_row_q4(row, out.assumingMemoryBound(to: blip2_block_q4.self), cols)
        case .bf16: fatalError("bf16 has no kernels")
        }
    }
    return data
}

func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

/// CPU seconds this process has used (all threads): beside wall time it shows how much of the machine a
/// run got when other processes share the cores.
func processSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
}

/// Median wall seconds and median CPU seconds of one product.
func measure(_ type: ElementType, rows: Int, cols: Int, tokens: Int, threads: Int) -> (wall: Double, cpu: Double) {
    let data = weights(type, rows: rows, cols: cols)
    defer { data.deallocate() }
    let layer = Linear(WeightMatrix(name: "bench", type: type, rows: rows, cols: cols, data: data), bias: nil)
    let x = UnsafeMutablePointer<Float>.allocate(capacity: tokens * cols)
    let y = UnsafeMutablePointer<Float>.allocate(capacity: tokens * rows)
    defer { x.deallocate(); y.deallocate() }
    for i in 0..<(tokens * cols) { x[i] = Float(i % 113) * 0.01 - 0.5 }
    MatMul.threads = threads
    MatMul.linear(x, tokens: tokens, layer, into: y)   // warm-up: pool, pages, caches
    var times: [Double] = [], cpu: [Double] = []
    for _ in 0..<(tokens > 1 ? max(3, repeats / 2) : repeats) {
        let start = DispatchTime.now().uptimeNanoseconds, startCPU = processSeconds()
        MatMul.linear(x, tokens: tokens, layer, into: y)
        times.append(Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9)
        cpu.append(processSeconds() - startCPU)
    }
    return (median(times), median(cpu))
}

print("instruction set: \(MatMul.isa)")
for threads in threadCounts {
    for type in [ElementType.q4, .q8] {
        let rows = 10240, cols = 2560
        let (seconds, cpu) = measure(type, rows: rows, cols: cols, tokens: 1, threads: threads)
        let bytes = Double(type.byteCount(elements: rows * cols)!)
        print(String(format: "matvec %@ 2560x10240, 1 token, %d thread(s): %.3f ms, %.1f GB/s (CPU %.3f ms)",
                     type.name, threads, seconds * 1e3, bytes / seconds / 1e9, cpu * 1e3))
    }
    for type in [ElementType.q8, .q4, .f16, .f32] {
        let rows = 6144, cols = 1408, tokens = 257
        let (seconds, cpu) = measure(type, rows: rows, cols: cols, tokens: tokens, threads: threads)
        print(String(format: "matmul %@ 1408x6144, 257 tokens, %d thread(s): %.1f ms, %.1f GOP/s (CPU %.1f ms)",
                     type.name, threads, seconds * 1e3, 2.0 * Double(rows * cols * tokens) / seconds / 1e9, cpu * 1e3))
    }
}
