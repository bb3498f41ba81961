import Blip2Core
import Blip2Model
import CKernels
import Foundation

// A quick look at the products on the real shapes, through the same seam the model uses
// (MatMul.linear: activation quantization, worker pool, kernels). Release builds only:
//   swift build -c release --product blip2-kernel-bench && .build/release/blip2-kernel-bench [--threads 1,2] [--isa avx2]
//     [--types q4,q8] [--matvec 2560x2560,2560x10240,10240x2560,2560x50272] [--no-matmul]
// matvec: one token through OPT-2.7B's decode shapes (in x out: q/k/v/out, fc1, fc2, lm_head), reported as
// weight bytes streamed per second, twice: "hot" repeats one matrix (cache-resident when it fits in L3),
// "streamed" cycles through copies totalling at least 256 MB, so every byte comes from memory as in decode.
// matmul: ViT-g fc1 shape (1408 -> 6144) at 257 tokens, reported as 2 * multiply-adds per second.

func argument(_ name: String) -> String? {
    let args = CommandLine.arguments
    guard let i = args.firstIndex(of: name), i + 1 < args.count else { return nil }
    return args[i + 1]
}

let usage = """
    USAGE: blip2-kernel-bench [--threads 1,2] [--isa ref|avx2|avx512|neon|dotprod] [--types q4,q8]
                              [--matvec COLSxROWS,...] [--repeats N] [--no-matmul]

    Kernel throughput on OPT-2.7B's decode shapes (matrix-vector, weight GB/s, cache-hot and streamed from
    memory) and ViT-g's fc1 at 257 tokens (matrix-matrix, GOP/s). Build with -c release (docs/KERNELS.md).

    OPTIONS:
      --threads n[,n...]   thread counts to compare (default: 1,2)
      --isa NAME           instruction set (default: the best the CPU has, or BLIP2_ISA)
      --types t[,t...]     weight types (default: q4,q8)
      --matvec COLSxROWS   matrix-vector shapes (default: 2560x2560,2560x10240,10240x2560,2560x50272)
      --repeats N          timed repetitions, the median is reported (default: 7)
      --no-matmul          skip the matrix-matrix product
      -h, --help           show this help
    """
do {
    let valued: Set = ["--threads", "--isa", "--types", "--matvec", "--repeats"]
    var rest = CommandLine.arguments.dropFirst()
    while let arg = rest.popFirst() {
        if arg == "--help" || arg == "-h" {
            print(usage)
            exit(0)
        }
        if valued.contains(arg), rest.popFirst() != nil { continue }
        if arg == "--no-matmul" { continue }
        FileHandle.standardError.write(Data("error: unknown or incomplete option '\(arg)'\n\n\(usage)\n".utf8))
        exit(64)
    }
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

/// Median wall seconds and median CPU seconds of one one-token product, cycling through `copies` matrices.
func measureStreamed(_ type: ElementType, rows: Int, cols: Int, threads: Int, copies: Int) -> (wall: Double, cpu: Double) {
    let first = weights(type, rows: rows, cols: cols), bytes = type.byteCount(elements: rows * cols)!
    let matrices = [first] + (1..<copies).map { _ in
        let copy = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 16384)
        copy.copyMemory(from: first, byteCount: bytes)
        return copy
    }
    defer { matrices.forEach { $0.deallocate() } }
    let layers = matrices.map { Linear(WeightMatrix(name: "bench", type: type, rows: rows, cols: cols, data: $0), bias: nil) }
    let x = UnsafeMutablePointer<Float>.allocate(capacity: cols)
    let y = UnsafeMutablePointer<Float>.allocate(capacity: rows)
    defer { x.deallocate(); y.deallocate() }
    for i in 0..<cols { x[i] = Float(i % 113) * 0.01 - 0.5 }
    MatMul.threads = threads
    for layer in layers { MatMul.linear(x, tokens: 1, layer, into: y) }   // warm-up: pool, pages
    var times: [Double] = [], cpu: [Double] = []
    for round in 0..<max(repeats, 2 * copies) {
        let layer = layers[round % copies]
        let start = DispatchTime.now().uptimeNanoseconds, startCPU = processSeconds()
        MatMul.linear(x, tokens: 1, layer, into: y)
        times.append(Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9)
        cpu.append(processSeconds() - startCPU)
    }
    return (median(times), median(cpu))
}

let types = (argument("--types") ?? "q4,q8").split(separator: ",").compactMap { ElementType(name: String($0)) }
let shapes: [(cols: Int, rows: Int)] = (argument("--matvec") ?? "2560x2560,2560x10240,10240x2560,2560x50272")
    .split(separator: ",").compactMap { shape in
        let parts = shape.split(separator: "x").compactMap { Int($0) }
        return parts.count == 2 ? (parts[0], parts[1]) : nil
    }
let streamBytes = 256 << 20

print("instruction set: \(MatMul.isa)")
for threads in threadCounts {
    for type in types {
        for shape in shapes {
            let bytes = Double(type.byteCount(elements: shape.rows * shape.cols)!)
            let (hot, hotCPU) = measure(type, rows: shape.rows, cols: shape.cols, tokens: 1, threads: threads)
            let copies = max(2, (streamBytes + Int(bytes) - 1) / Int(bytes))
            let (cold, coldCPU) = measureStreamed(type, rows: shape.rows, cols: shape.cols, threads: threads, copies: copies)
            print(String(format: "matvec %@ %dx%d, 1 token, %d thread(s): hot %.3f ms %.1f GB/s (CPU %.3f ms), streamed %.3f ms %.1f GB/s (CPU %.3f ms)",
                         type.name, shape.cols, shape.rows, threads, hot * 1e3, bytes / hot / 1e9, hotCPU * 1e3,
                         cold * 1e3, bytes / cold / 1e9, coldCPU * 1e3))
        }
    }
    guard !CommandLine.arguments.contains("--no-matmul") else { continue }
    for type in [ElementType.q8, .q4, .f16, .f32] {
        let rows = 6144, cols = 1408, tokens = 257
        let (seconds, cpu) = measure(type, rows: rows, cols: cols, tokens: tokens, threads: threads)
        print(String(format: "matmul %@ 1408x6144, 257 tokens, %d thread(s): %.1f ms, %.1f GOP/s (CPU %.1f ms)",
                     type.name, threads, seconds * 1e3, 2.0 * Double(rows * cols * tokens) / seconds / 1e9, cpu * 1e3))
    }
}
