import Blip2Core
import CKernels
import Foundation

// MARK: - The matrix product seam
//
// Every linear layer in the model goes through `MatMul.linear`. Activations meeting q8/q4 weights are
// quantized once per call to int8 blocks (q8a); the rows of W are then split across the worker pool and
// each part runs the tiled kernels of the selected instruction set (CKernels, docs/KERNELS.md).

/// The instruction sets the kernels are written for; `ref` is the portable scalar reference.
public enum KernelISA: String, CaseIterable, Sendable, CustomStringConvertible {
    case ref, avx2, avx512, neon, dotprod

    var cValue: blip2_isa { blip2_isa(rawValue: UInt32(KernelISA.allCases.firstIndex(of: self)!)) }
    /// The C kernel table, when this build contains it (whether or not the CPU can run it).
    public var table: UnsafePointer<blip2_kernels>? { blip2_kernels_for(cValue) }
    /// Built in and runnable on this CPU.
    public var isSupported: Bool { blip2_isa_supported(cValue) }
    /// The fastest instruction set this CPU supports.
    public static var best: KernelISA { KernelISA.allCases[Int(blip2_isa_best().rawValue)] }
    /// Every instruction set this CPU supports, `ref` first.
    public static var supported: [KernelISA] { allCases.filter(\.isSupported) }
    public var description: String { rawValue }

    /// The environment variable that forces an instruction set (for tests and benchmarks).
    public static let environmentVariable = "BLIP2_ISA"
}

public enum KernelSelectionError: Error, CustomStringConvertible {
    case unknown(String)
    case unsupported(KernelISA)

    public var description: String {
        switch self {
        case .unknown(let name):
            return "\(KernelISA.environmentVariable)=\(name) is not an instruction set; use one of \(KernelISA.allCases.map(\.rawValue).joined(separator: ", "))"
        case .unsupported(let isa):
            return "\(KernelISA.environmentVariable)=\(isa) is not available on this CPU (it supports \(KernelISA.supported.map(\.rawValue).joined(separator: ", "))); unset it or pick one of those"
        }
    }
}

public enum MatMul {
    /// Threads for the products (the size of the worker pool, the caller's thread included).
    /// Default: every core. Changing it replaces the pool at the next product.
    nonisolated(unsafe) public static var threads = ProcessInfo.processInfo.activeProcessorCount

    /// The instruction set the products use: `BLIP2_ISA` when set, otherwise the best the CPU has.
    public static var isa: KernelISA { state.lock(); defer { state.unlock() }; return state.kernels().isa }

    /// Reads `BLIP2_ISA` and selects it (or the best supported set when unset). Command-line tools call this
    /// first to report a bad value as an error; otherwise the first product does it and exits on a bad value.
    @discardableResult
    public static func configureFromEnvironment() throws -> KernelISA {
        let isa = try isaFromEnvironment()
        try select(isa)
        return isa
    }

    /// Forces an instruction set for every following product (benchmarks, tests).
    public static func select(_ isa: KernelISA) throws {
        guard isa.isSupported, isa.table != nil else { throw KernelSelectionError.unsupported(isa) }
        state.lock(); defer { state.unlock() }
        state.selected = isa
    }

    static func isaFromEnvironment() throws -> KernelISA {
        guard let name = ProcessInfo.processInfo.environment[KernelISA.environmentVariable], !name.isEmpty else { return .best }
        guard let isa = KernelISA(rawValue: name.lowercased()) else { throw KernelSelectionError.unknown(name) }
        guard isa.isSupported else { throw KernelSelectionError.unsupported(isa) }
        return isa
    }

    /// The selected kernel table (products, softmax), resolved like `isa`.
    public static var kernels: UnsafePointer<blip2_kernels> { state.lock(); defer { state.unlock() }; return state.kernels().table }

    /// The worker pool the products (and attention) run on, sized by `threads`.
    public static var pool: WorkerPool { state.lock(); defer { state.unlock() }; return state.currentPool() }

    /// y[t, o] = sum_i x[t, i] * W[o, i] + b[o] for t < tokens. x: [tokens, in], y: [tokens, out].
    public static func linear(_ x: UnsafePointer<Float>, tokens: Int, _ layer: Linear, into y: UnsafeMutablePointer<Float>) {
        guard tokens > 0, layer.weight.rows > 0 else { return }
        guard weightKind(layer.weight.type) != nil else {
            referenceRows(0..<layer.weight.rows, x, tokens: tokens, layer, into: y)
            return
        }
        withUnsafePointer(to: layer) { one in
            product(x, tokens: tokens, UnsafeBufferPointer(start: one, count: 1), into: y, stride: layer.weight.rows)
        }
    }

    /// Several layers over the same input, their outputs side by side: y[t] = [layers[0](x[t]), layers[1](x[t]), ...]
    /// (row stride: the layers' outputs added up). Layers that share their input width and weight type (the
    /// q, k and v projections) run as one job: the input is quantized once and the threads meet once instead
    /// of once per layer. Every output is the value `linear` gives.
    public static func linear(_ x: UnsafePointer<Float>, tokens: Int, concatenated layers: [Linear], into y: UnsafeMutablePointer<Float>) {
        guard tokens > 0, let first = layers.first else { return }
        let stride = layers.reduce(0) { $0 + $1.weight.rows }
        let shared = weightKind(first.weight.type) != nil
            && layers.allSatisfy { $0.weight.type == first.weight.type && $0.weight.cols == first.weight.cols }
        if shared {
            layers.withUnsafeBufferPointer { product(x, tokens: tokens, $0, into: y, stride: stride) }
            return
        }
        var offset = 0
        for layer in layers {
            if weightKind(layer.weight.type) == nil {
                let out = UnsafeMutablePointer<Float>.allocate(capacity: tokens * layer.weight.rows)
                defer { out.deallocate() }
                referenceRows(0..<layer.weight.rows, x, tokens: tokens, layer, into: out)
                for t in 0..<tokens { (y + t * stride + offset).update(from: out + t * layer.weight.rows, count: layer.weight.rows) }
            } else {
                withUnsafePointer(to: layer) { one in
                    product(x, tokens: tokens, UnsafeBufferPointer(start: one, count: 1), into: y + offset, stride: stride)
                }
            }
            offset += layer.weight.rows
        }
    }

    /// Layers sharing input width and a kernel weight type, outputs side by side with row stride `stride`.
    private static func product(_ x: UnsafePointer<Float>, tokens: Int, _ layers: UnsafeBufferPointer<Linear>,
                                into y: UnsafeMutablePointer<Float>, stride: Int) {
        guard let first = layers.first, let kind = weightKind(first.weight.type) else { return }
        state.lock(); defer { state.unlock() }
        let kernels = state.kernels().table
        let pool = state.currentPool()
        let cols = first.weight.cols

        var input = UnsafeRawPointer(x)
        var inputRowBytes = cols * MemoryLayout<Float>.stride
        if kind == BLIP2_WEIGHT_Q8 || kind == BLIP2_WEIGHT_Q4 {
            let rowBytes = cols / Int(BLIP2_QBLOCK) * MemoryLayout<blip2_block_q8a>.stride
            let buffer = state.activationBuffer(bytes: tokens * rowBytes)
            let quantize = kernels.pointee.quantize_q8a!
            // Quantizing costs about one pass over x; worth sharing only when there are many tokens.
            let quantizeParts = tokens >= 16 ? min(pool.threads, tokens) : 1
            pool.run(parts: quantizeParts) { part, _ in
                for t in (tokens * part / quantizeParts)..<(tokens * (part + 1) / quantizeParts) {
                    quantize(x + t * cols, (buffer + t * rowBytes).assumingMemoryBound(to: blip2_block_q8a.self), cols)
                }
            }
            input = UnsafeRawPointer(buffer)
            inputRowBytes = rowBytes
        }

        // Rows go out in groups of 8 (every tile's height divides it), counted from each layer's first row,
        // so a row's tile, and so its value, does not depend on the split. There are more parts than
        // threads so a thread slowed by another process does not hold up the rest.
        var groups = 0, rows = 0
        for layer in layers {
            groups += (layer.weight.rows + 7) / 8
            rows += layer.weight.rows
        }
        let work = rows * cols * tokens
        let parts = work < 1 << 16 || pool.threads == 1 ? 1 : min(groups, 4 * pool.threads)
        let source = input, sourceRowBytes = inputRowBytes, totalGroups = groups
        pool.run(parts: parts) { part, _ in
            let g0 = totalGroups * part / parts, g1 = totalGroups * (part + 1) / parts
            var first = 0, offset = 0
            for layer in layers {
                let w = layer.weight, count = (w.rows + 7) / 8
                let lo = max(g0, first), hi = min(g1, first + count)
                if lo < hi {
                    let r0 = (lo - first) * 8, r1 = min(w.rows, (hi - first) * 8)
                    blip2_gemm(kernels, kind, w.data + r0 * w.rowBytes, w.rowBytes, r1 - r0, source, sourceRowBytes, tokens, cols,
                               layer.bias.map { $0 + r0 }, y + offset + r0, stride)
                }
                first += count
                offset += w.rows
            }
        }
    }

    static func weightKind(_ type: ElementType) -> blip2_weight_kind? {
        switch type {
        case .f32: return BLIP2_WEIGHT_F32
        case .f16: return BLIP2_WEIGHT_F16
        case .q8: return BLIP2_WEIGHT_Q8
        case .q4: return BLIP2_WEIGHT_Q4
        case .bf16: return nil
        }
    }

    /// Types without kernels (bf16 never reaches here from a model file): dequantize a row, dot it.
    private static func referenceRows(_ range: Range<Int>, _ x: UnsafePointer<Float>, tokens: Int, _ layer: Linear, into y: UnsafeMutablePointer<Float>) {
        let w = layer.weight
        let row = UnsafeMutablePointer<Float>.allocate(capacity: w.cols)
        defer { row.deallocate() }
        for o in range {
            w.dequantizeRow(o, into: row)
            let b = layer.bias?[o] ?? 0
            for t in 0..<tokens { y[t * w.rows + o] = dot(x + t * w.cols, row, w.cols) + b }
        }
    }

    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = SIMD8<Float>()
        var i = 0
        while i + 8 <= n {
            let va = UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self)
            let vb = UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self)
            acc += va * vb   // not addingProduct: without an FMA target that is a libm call per lane
            i += 8
        }
        var sum = acc.sum()
        while i < n {
            sum += a[i] * b[i]
            i += 1
        }
        return sum
    }

    // MARK: Shared state (one product at a time: concurrent callers take turns)

    private static let state = ProductState()
}

private final class ProductState: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    var selected: KernelISA?
    private var pool: WorkerPool?
    private var activations: UnsafeMutableRawPointer?
    private var activationBytes = 0

    init() { pthread_mutex_init(mutex, nil) }

    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }

    /// Locked. The selected kernels, resolved from the environment on first use.
    func kernels() -> (isa: KernelISA, table: UnsafePointer<blip2_kernels>) {
        if selected == nil {
            do {
                selected = try MatMul.isaFromEnvironment()
            } catch {
                // A forced instruction set the CPU lacks would die on an illegal instruction; stop clearly instead.
                FileHandle.standardError.write(Data("error: \(error)\n".utf8))
                exit(2)
            }
        }
        let isa = selected ?? .ref
        return (isa, isa.table ?? KernelISA.ref.table!)
    }

    /// Locked. The pool for the current `MatMul.threads`.
    func currentPool() -> WorkerPool {
        let wanted = max(1, MatMul.threads)
        if let pool, pool.threads == wanted { return pool }
        let fresh = WorkerPool(threads: wanted)
        pool = fresh
        return fresh
    }

    /// Locked. Scratch for quantized activations; grows, never shrinks.
    func activationBuffer(bytes: Int) -> UnsafeMutableRawPointer {
        if let activations, activationBytes >= bytes { return activations }
        activations?.deallocate()
        let size = max(bytes, 4096)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        activations = buffer
        activationBytes = size
        return buffer
    }
}

extension WeightMatrix {
    /// A matrix over caller-owned memory (benchmarks, tests); `data` must hold `rows` rows of `type`.
    public init(name: String, type: ElementType, rows: Int, cols: Int, data: UnsafeRawPointer) {
        self.init(name: name, type: type, rows: rows, cols: cols, data: data, rowBytes: type.byteCount(elements: cols) ?? 0)
    }
}

extension Linear {
    /// A layer over caller-owned memory (benchmarks, tests).
    public init(_ weight: WeightMatrix, bias: UnsafePointer<Float>?) {
        self.weight = weight
        self.bias = bias
    }
}
