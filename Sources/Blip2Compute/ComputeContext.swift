import Blip2Core
import CKernels
import Foundation

// MARK: - Compute context
//
// What every product and parallel operation runs on: the kernel table of one instruction set, a worker pool
// and the scratch the products reuse. A value handed to the model, not process-wide state, so two pipelines
// in one process each have theirs (or share one: a context runs one product at a time), and tests choose
// threads and instruction sets without touching each other.

/// The instruction sets the kernels are written for; `ref` is the portable scalar reference.
public enum KernelISA: String, CaseIterable, Sendable, CustomStringConvertible {
    case ref, avx2, avx512, neon, dotprod

    public var cValue: blip2_isa { blip2_isa(rawValue: UInt32(KernelISA.allCases.firstIndex(of: self)!)) }
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

    /// `BLIP2_ISA` from `environment` when set, otherwise the best the CPU has.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws -> KernelISA {
        guard let name = environment[environmentVariable], !name.isEmpty else { return .best }
        guard let isa = KernelISA(rawValue: name.lowercased()) else { throw KernelSelectionError.unknown(name) }
        guard isa.isSupported else { throw KernelSelectionError.unsupported(isa) }
        return isa
    }
}

public enum KernelSelectionError: Error, CustomStringConvertible, Equatable {
    case unknown(String)
    case unsupported(KernelISA)
    case threads(Int)

    public var description: String {
        switch self {
        case .unknown(let name):
            return "\(KernelISA.environmentVariable)=\(name) is not an instruction set; use one of \(KernelISA.allCases.map(\.rawValue).joined(separator: ", "))"
        case .unsupported(let isa):
            return "\(KernelISA.environmentVariable)=\(isa) is not available on this CPU (it supports \(KernelISA.supported.map(\.rawValue).joined(separator: ", "))); unset it or pick one of those"
        case .threads(let count):
            return "\(count) threads: use at least 1"
        }
    }
}

/// Sees what goes into the matrix products: x [tokens, weight.cols], on the thread that called the product.
public protocol ProductObserver: AnyObject {
    func observe(input x: UnsafePointer<Float>, tokens: Int, weight: WeightMatrix)
}

// @unchecked Sendable: one product at a time, behind its mutex; the observer is set before the context is shared.
public final class ComputeContext: @unchecked Sendable {
    /// The instruction set of `kernels`.
    public let isa: KernelISA
    /// The selected kernel table (products, softmax, GELU).
    public let kernels: UnsafePointer<blip2_kernels>
    /// The worker pool products and parallel operations run on (the caller's thread included).
    public let pool: WorkerPool
    /// Threads working on a job, the caller's included.
    public var threads: Int { pool.threads }
    /// Shown the input of every product before it runs (`blip2 imatrix` gathers activation statistics so).
    /// Set it while no product runs; nil (the default) costs the products one test of a pointer.
    public var productObserver: ProductObserver?
    /// Accumulates the time spent in products (and quantizing their activations) and their operations, so a
    /// stage's profile can tell products from everything else. Set it while no product runs; nil (the
    /// default) costs the products one test of a pointer.
    public var productClock: ProductClock?

    // One product at a time owns the activation scratch.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var activations: UnsafeMutableRawPointer?
    private var activationBytes = 0

    /// A context with its own worker pool of `threads` threads (default: every core) running `isa`'s kernels.
    public init(threads: Int = ProcessInfo.processInfo.activeProcessorCount, isa: KernelISA = .best) throws {
        guard threads >= 1 else { throw KernelSelectionError.threads(threads) }
        guard isa.isSupported, let table = isa.table else { throw KernelSelectionError.unsupported(isa) }
        self.isa = isa
        kernels = table
        pool = WorkerPool(threads: threads)
        pthread_mutex_init(mutex, nil)
    }

    /// The instruction set `BLIP2_ISA` names (the best one when unset), with `threads` threads.
    public static func fromEnvironment(threads: Int = ProcessInfo.processInfo.activeProcessorCount) throws -> ComputeContext {
        try ComputeContext(threads: threads, isa: KernelISA.fromEnvironment())
    }

    deinit {
        activations?.deallocate()
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with exclusive use of at least `bytes` of 64-byte aligned activation scratch, which
    /// grows (never shrinks) to the largest product seen.
    func withActivationScratch<T>(bytes: Int, _ body: (UnsafeMutableRawPointer) throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        if activations == nil || activationBytes < bytes {
            activations?.deallocate()
            activationBytes = max(bytes, 4096)
            activations = UnsafeMutableRawPointer.allocate(byteCount: activationBytes, alignment: 64)
        }
        return try body(activations!)
    }

    /// Runs `body` over consecutive ranges covering 0..<count, on the pool when there are at least
    /// `minimum` elements per thread.
    @inline(__always)
    public func forChunks(count: Int, minimum: Int, _ body: (Range<Int>) -> Void) {
        guard threads > 1, count >= 2 * minimum else {
            body(0..<count)
            return
        }
        let parts = min(threads * 2, count / minimum)
        pool.run(parts: parts) { part, _ in body((count * part / parts)..<(count * (part + 1) / parts)) }
    }
}

/// Time in the products of one or more stages: the whole product calls (`productNanoseconds`, activation
/// quantization included), the quantization alone, and the multiply-adds done (2 x rows x cols x tokens);
/// and the time of the context's other operations, by kind.
// @unchecked Sendable: written only by the thread running the stage (one operation at a time), read after.
public final class ProductClock: @unchecked Sendable {
    public private(set) var productNanoseconds: UInt64 = 0
    public private(set) var quantizeNanoseconds: UInt64 = 0
    public private(set) var operations: Double = 0

    /// The context's operations other than products. `attentionProducts` is the part of `attention` that
    /// the non-causal heads (image encoder, Q-Former) spend in their two many-token products, scores and
    /// values: the attention's wall time apportioned by the time its parts spent in them.
    public enum Operation: Int, CaseIterable, Sendable { case attention, norms, gelu, attentionProducts }
    private var operationNanoseconds = [UInt64](repeating: 0, count: Operation.allCases.count)

    public init() {}

    public func reset() {
        productNanoseconds = 0
        quantizeNanoseconds = 0
        operations = 0
        for i in operationNanoseconds.indices { operationNanoseconds[i] = 0 }
    }

    public func nanoseconds(_ operation: Operation) -> UInt64 { operationNanoseconds[operation.rawValue] }

    func add(_ operation: Operation, since started: UInt64) {
        add(operation, nanoseconds: DispatchTime.now().uptimeNanoseconds - started)
    }

    func add(_ operation: Operation, nanoseconds: UInt64) {
        operationNanoseconds[operation.rawValue] += nanoseconds
    }

    func add(product nanoseconds: UInt64, quantize: UInt64, operations: Double) {
        productNanoseconds += nanoseconds
        quantizeNanoseconds += quantize
        self.operations += operations
    }
}
