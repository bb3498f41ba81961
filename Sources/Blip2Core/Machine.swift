import CKernels
import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#endif

// MARK: - The machine a measurement ran on

public struct MachineInfo: Codable, Sendable {
    public var cpu: String
    public var architecture: String
    public var cores: Int
    public var memoryBytes: UInt64
    public var features: [String]

    enum CodingKeys: String, CodingKey { case cpu, architecture, cores, memoryBytes = "memory_bytes", features }

    public static func current() -> MachineInfo {
        MachineInfo(cpu: cpuName(), architecture: architecture, cores: ProcessInfo.processInfo.activeProcessorCount,
                    memoryBytes: ProcessInfo.processInfo.physicalMemory, features: CPUFeatures.names)
    }

    static var architecture: String {
        #if arch(x86_64)
        return "x86_64"
        #elseif arch(arm64)
        return "aarch64"
        #else
        return "other"
        #endif
    }

    /// "model name" on x86; on ARM boards the kernel reports parts, so fall back to the device tree model.
    static func cpuName() -> String {
        if let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) {
            for line in text.split(separator: "\n") where line.hasPrefix("model name") || line.hasPrefix("Model") {
                if let value = line.split(separator: ":", maxSplits: 1).last { return value.trimmingCharacters(in: .whitespaces) }
            }
        }
        if let model = try? String(contentsOfFile: "/proc/device-tree/model", encoding: .utf8) {
            return model.trimmingCharacters(in: CharacterSet(charactersIn: "\0").union(.whitespacesAndNewlines))
        }
        return "unknown"
    }
}

public enum CPUFeatures {
    /// What the CPU reports that the kernels can use.
    public static var names: [String] {
        let bits = blip2_cpu_features()
        let table: [(UInt32, String)] = [(1 << 0, "sse4.2"), (1 << 1, "avx2"), (1 << 2, "avx512"), (1 << 3, "avx512vnni"),
                                          (1 << 8, "neon"), (1 << 9, "dotprod"), (1 << 10, "crc")]
        return table.filter { bits & $0.0 != 0 }.map(\.1)
    }
}

// MARK: - Process statistics

public enum ProcessStats {
    /// Peak resident set size of this process so far, in bytes.
    public static var peakResidentBytes: Int {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return Int(usage.ru_maxrss) * 1024   // Linux reports kilobytes
    }

    /// Starts `peakResidentBytes` again from the current resident size (Linux: /proc/self/clear_refs), so a
    /// measurement is not charged for what an earlier one in the same process held. False if refused.
    @discardableResult
    public static func resetPeakResident() -> Bool {
        guard let handle = FileHandle(forWritingAtPath: "/proc/self/clear_refs") else { return false }
        defer { try? handle.close() }
        return (try? handle.write(contentsOf: Data("5".utf8))) != nil
    }
}

// MARK: - Memory read bandwidth

public enum ReadBandwidth {
    /// Bytes per second this process reads from memory with `threads` threads streaming a buffer far larger
    /// than the caches: the floor for decoding, which reads every weight once per token. Median of `runs`.
    public static func measure(bytes: Int = 1 << 30, threads: Int, runs: Int = 5) -> Double {
        let count = bytes / MemoryLayout<SIMD16<Float>>.stride
        let buffer = UnsafeMutablePointer<SIMD16<Float>>.allocate(capacity: count)
        defer { buffer.deallocate() }
        for i in 0..<count { buffer[i] = SIMD16(repeating: Float(i & 7)) }
        var rates: [Double] = []
        var sink = SIMD16<Float>()
        let parts = max(1, threads)
        let partial = UnsafeMutablePointer<SIMD16<Float>>.allocate(capacity: parts)
        defer { partial.deallocate() }
        for _ in 0..<runs {
            let start = DispatchTime.now().uptimeNanoseconds
            // Each part reads its own range of `buffer` and writes its own slot of `partial`.
            forEachDisjointPart(parts) { part in
                var a = SIMD16<Float>(), b = SIMD16<Float>(), c = SIMD16<Float>(), d = SIMD16<Float>()
                var i = count * part / parts
                let end = count * (part + 1) / parts
                while i + 4 <= end {
                    a += buffer[i]; b += buffer[i + 1]; c += buffer[i + 2]; d += buffer[i + 3]
                    i += 4
                }
                while i < end { a += buffer[i]; i += 1 }
                partial[part] = a + b + c + d
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            for p in 0..<parts { sink += partial[p] }
            rates.append(Double(count * MemoryLayout<SIMD16<Float>>.stride) / seconds)
        }
        if sink.sum() == .infinity { print("") }   // keeps the reads from being optimized away
        return rates.sorted()[rates.count / 2]
    }
}
