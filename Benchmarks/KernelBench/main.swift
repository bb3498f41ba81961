import Blip2Compute
import Blip2Core
import CKernels
import Foundation

// A quick look at the products on the full-size model's shapes, through the same seam the model uses
// (ComputeContext.linear: activation quantization, worker pool, kernels), against the int8 peak of the
// selected instruction set measured by a register-only loop in the same run. Release builds only.

let usage = """
USAGE: blip2-kernel-bench [--threads 1,2] [--isa NAME] [--types q8p,q4p,...] [--matvec SHAPES] [--matmul SHAPES]
                          [--mm-types q8p,q4p,...] [--step-tokens N,...] [--no-matvec] [--no-matmul] [--repeats N]

  --threads      thread counts to measure (default 1,2)
  --isa          ref, avx2, avx512, neon or dotprod (default: BLIP2_ISA, else the best this CPU has)
  --types        weight types for the one-token products (default q4p,q8p,q4,q8)
  --matvec       IN x OUT shapes of one-token products (default: OPT-2.7B's decode shapes)
  --matmul       IN x OUT x TOKENS shapes of many-token products (default: every product shape of
                 blip2-opt-2.7b's image encoding and a 33-token prompt)
  --mm-types     weight types for the many-token products (default q8p,q4p,q8,q4,f16,f32)
  --step-tokens  also time the one-token shapes at these token counts, streamed (a decode step of that many
                 sequences: every weight read from memory once for all of them), e.g. 2,3,4,5,8
  --repeats      timed repetitions, the median is reported (default 7)
  --no-matvec, --no-matmul   skip one kind of product

matvec lines report weight bytes streamed per second, "hot" (one matrix, cache-resident when it fits) and
"streamed" (copies totalling 256 MB, so every byte comes from memory as in decode); step lines the same
streamed product at several tokens, against the one-token time of the same run. matmul lines report
2 x multiply-adds per second and their share of the int8 peak.
"""
do {
    let valued: Set = ["--threads", "--isa", "--types", "--matvec", "--matmul", "--mm-types", "--step-tokens", "--repeats"]
    let flags: Set = ["--no-matvec", "--no-matmul"]
    var rest = CommandLine.arguments.dropFirst()
    while let arg = rest.popFirst() {
        if arg == "--help" || arg == "-h" {
            print(usage)
            exit(0)
        }
        if valued.contains(arg), rest.popFirst() != nil { continue }
        if flags.contains(arg) { continue }
        FileHandle.standardError.write(Data("error: unknown or incomplete option '\(arg)'\n\n\(usage)\n".utf8))
        exit(64)
    }
}

func argument(_ name: String) -> String? {
    let args = CommandLine.arguments
    guard let i = args.firstIndex(of: name), i + 1 < args.count else { return nil }
    return args[i + 1]
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
    exit(1)
}

let threadCounts = (argument("--threads") ?? "1,2").split(separator: ",").compactMap { Int($0) }
let repeats = Int(argument("--repeats") ?? "") ?? 7
let isa: KernelISA
do {
    if let name = argument("--isa") {
        guard let named = KernelISA(rawValue: name) else { fail("unknown instruction set \(name)") }
        isa = named
    } else {
        isa = try KernelISA.fromEnvironment()
    }
} catch { fail("\(error)") }

func types(_ list: String) -> [ElementType] {
    list.split(separator: ",").map { name in
        guard let type = ElementType(name: String(name)), type.isWritable else { fail("unknown weight type \(name)") }
        return type
    }
}

/// Random weights of `type` for a [rows, cols] matrix, quantized by the converter's own routines.
func weights(_ type: ElementType, rows: Int, cols: Int) -> UnsafeMutableRawPointer {
    let bytes = type.byteCount(shape: [rows, cols])!
    let data = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 16384)
    var state: UInt64 = 0x1234_5678
    let values = UnsafeMutablePointer<Float>.allocate(capacity: rows * cols)
    defer { values.deallocate() }
    for i in 0..<(rows * cols) {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        values[i] = Float(Int64(bitPattern: state >> 11) % 2000) * 1e-5
    }
    type.traits.from_f32(values, rows, cols, data)
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

/// Median wall and CPU seconds of `body` over `runs` runs after one warm-up.
func time(runs: Int, _ body: (Int) -> Void) -> (wall: Double, cpu: Double) {
    body(0)
    var times: [Double] = [], cpu: [Double] = []
    for run in 0..<runs {
        let start = DispatchTime.now().uptimeNanoseconds, startCPU = processSeconds()
        body(run)
        times.append(Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9)
        cpu.append(processSeconds() - startCPU)
    }
    return (median(times), median(cpu))
}

/// The int8 peak of the context's instruction set on `threads` threads: every thread runs the register-only
/// loop at once, ops over wall time.
func int8Peak(_ compute: ComputeContext) -> Double {
    let iterations: UInt64 = 2_000_000
    let peak = compute.kernels.pointee.int8_peak!
    var best = 0.0
    for _ in 0..<3 {
        var ops = [UInt64](repeating: 0, count: compute.threads)
        let start = DispatchTime.now().uptimeNanoseconds
        ops.withUnsafeMutableBufferPointer { counts in
            compute.pool.run(parts: compute.threads) { part, _ in counts[part] = peak(iterations) }
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
        best = max(best, Double(ops.reduce(0, +)) / seconds)
    }
    return best
}

func measure(_ compute: ComputeContext, _ type: ElementType, rows: Int, cols: Int, tokens: Int, runs: Int) -> (wall: Double, cpu: Double) {
    let data = weights(type, rows: rows, cols: cols)
    defer { data.deallocate() }
    let layer = Linear(WeightMatrix(name: "bench", type: type, rows: rows, cols: cols, data: data), bias: nil)
    let x = UnsafeMutablePointer<Float>.allocate(capacity: tokens * cols)
    let y = UnsafeMutablePointer<Float>.allocate(capacity: tokens * rows)
    defer { x.deallocate(); y.deallocate() }
    for i in 0..<(tokens * cols) { x[i] = Float(i % 113) * 0.01 - 0.5 }
    return time(runs: runs) { _ in compute.linear(x, tokens: tokens, layer, into: y) }
}

/// Products of `tokens` tokens (a decode step of that many sequences) cycling through `copies` matrices, so
/// the weights stream from memory.
func measureStreamed(_ compute: ComputeContext, _ type: ElementType, rows: Int, cols: Int, tokens: Int = 1, copies: Int) -> (wall: Double, cpu: Double) {
    let first = weights(type, rows: rows, cols: cols), bytes = type.byteCount(shape: [rows, cols])!
    let matrices = [first] + (1..<copies).map { _ in
        let copy = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 16384)
        copy.copyMemory(from: first, byteCount: bytes)
        return copy
    }
    defer { matrices.forEach { $0.deallocate() } }
    let layers = matrices.map { Linear(WeightMatrix(name: "bench", type: type, rows: rows, cols: cols, data: $0), bias: nil) }
    let x = UnsafeMutablePointer<Float>.allocate(capacity: tokens * cols)
    let y = UnsafeMutablePointer<Float>.allocate(capacity: tokens * rows)
    defer { x.deallocate(); y.deallocate() }
    for i in 0..<(tokens * cols) { x[i] = Float(i % 113) * 0.01 - 0.5 }
    for layer in layers { compute.linear(x, tokens: tokens, layer, into: y) }   // pages in every copy
    return time(runs: max(repeats, 2 * copies)) { run in compute.linear(x, tokens: tokens, layers[run % copies], into: y) }
}

func shapes(_ list: String, parts: Int) -> [[Int]] {
    list.split(separator: ",").map { shape in
        let values = shape.split(separator: "x").compactMap { Int($0) }
        guard values.count == parts, values.allSatisfy({ $0 > 0 }) else { fail("bad shape \(shape)") }
        return values
    }
}

let matvecTypes = types(argument("--types") ?? "q4p,q8p,q4,q8")
let matmulTypes = types(argument("--mm-types") ?? "q8p,q4p,q8,q4,f16,f32")
let matvecShapes = shapes(argument("--matvec") ?? "2560x2560,2560x10240,10240x2560,2560x50272", parts: 2)
// ViT-g (257 tokens): qkv, projection, fc1, fc2; Q-Former (32 queries; cross-attention keys and values over
// the 257 image states): query, key/value, cross key/value, intermediate, output; projection; OPT-2.7B on a
// 33-token prompt: q/k/v together, out_proj, fc1, fc2.
let matmulShapes = shapes(argument("--matmul") ?? [
    "1408x4224x257", "1408x1408x257", "1408x6144x257", "6144x1408x257",
    "768x768x32", "1408x768x257", "768x3072x32", "3072x768x32", "768x2560x32",
    "2560x7680x33", "2560x2560x33", "2560x10240x33", "10240x2560x33",
].joined(separator: ","), parts: 3)
let streamBytes = 256 << 20
let stepTokens = (argument("--step-tokens") ?? "").split(separator: ",").map { value in
    guard let tokens = Int(value), tokens > 0 else { fail("bad --step-tokens value \(value)") }
    return tokens
}

print("instruction set: \(isa)")
for threads in threadCounts {
    let compute: ComputeContext
    do { compute = try ComputeContext(threads: threads, isa: isa) } catch { fail("\(error)") }
    let peak = int8Peak(compute)
    print(String(format: "int8 peak, %d thread(s): %.1f GOP/s (register-only loop of the %@ multiply-add sequence)", threads, peak / 1e9, isa.rawValue))
    if !CommandLine.arguments.contains("--no-matvec") {
        for type in matvecTypes {
            for shape in matvecShapes {
                let (cols, rows) = (shape[0], shape[1])
                let bytes = Double(type.byteCount(shape: [rows, cols])!)
                let (hot, hotCPU) = measure(compute, type, rows: rows, cols: cols, tokens: 1, runs: repeats)
                let copies = max(2, (streamBytes + Int(bytes) - 1) / Int(bytes))
                let (cold, coldCPU) = measureStreamed(compute, type, rows: rows, cols: cols, copies: copies)
                print(String(format: "matvec %@ %dx%d, 1 token, %d thread(s): hot %.3f ms %.1f GB/s (CPU %.3f ms), streamed %.3f ms %.1f GB/s (CPU %.3f ms)",
                             type.name, cols, rows, threads, hot * 1e3, bytes / hot / 1e9, hotCPU * 1e3,
                             cold * 1e3, bytes / cold / 1e9, coldCPU * 1e3))
                for tokens in stepTokens {
                    let (step, stepCPU) = measureStreamed(compute, type, rows: rows, cols: cols, tokens: tokens, copies: copies)
                    print(String(format: "step %@ %dx%d, %d tokens, %d thread(s): streamed %.3f ms, %.2fx one token (CPU %.3f ms)",
                                 type.name, cols, rows, tokens, threads, step * 1e3, step / cold, stepCPU * 1e3))
                }
            }
        }
    }
    guard !CommandLine.arguments.contains("--no-matmul") else { continue }
    for shape in matmulShapes {
        let (cols, rows, tokens) = (shape[0], shape[1], shape[2])
        for type in matmulTypes where type.canStore(shape: [rows, cols]) {
            let (seconds, cpu) = measure(compute, type, rows: rows, cols: cols, tokens: tokens, runs: max(3, repeats / 2))
            let ops = 2.0 * Double(rows * cols * tokens) / seconds
            print(String(format: "matmul %@ %dx%d, %d tokens, %d thread(s): %.2f ms, %.1f GOP/s, %.0f%% of the int8 peak (CPU %.2f ms)",
                         type.name, cols, rows, tokens, threads, seconds * 1e3, ops / 1e9, 100 * ops / peak, cpu * 1e3))
        }
    }
}
