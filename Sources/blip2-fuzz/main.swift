import Blip2Fuzz
import Foundation

// blip2-fuzz TARGET [libFuzzer arguments]   (built by Tools/fuzz.sh with -D BLIP2_FUZZING and libFuzzer)
// blip2-fuzz TARGET FILE...                 (any build: run each file through the target once)
//
// The fuzzing build links libFuzzer without its main (libclang_rt.fuzzer_no_main), so this main stays
// the entry point of both builds and hands the arguments after TARGET to LLVMFuzzerRunDriver.

let arguments = CommandLine.arguments
if arguments.count == 2, arguments[1] == "--list" {
    for target in FuzzTarget.allCases { print(target.rawValue) }
    exit(0)
}
guard arguments.count >= 2, let target = FuzzTarget(rawValue: arguments[1]) else {
    let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
    FileHandle.standardError.write(Data("usage: blip2-fuzz TARGET [FILE... | libFuzzer arguments] | --list\ntargets: \(names)\n".utf8))
    exit(64)
}

#if BLIP2_FUZZING
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

// Set before libFuzzer starts, read by its callback on the same one thread.
nonisolated(unsafe) var selected = target
// libFuzzer sees the program name and everything after TARGET.
var driverArguments = [arguments[0]] + arguments.dropFirst(2)
var cArguments: [UnsafeMutablePointer<CChar>?] = driverArguments.map { strdup($0) } + [nil]
var argc = CInt(driverArguments.count)
let status = cArguments.withUnsafeMutableBufferPointer { buffer -> CInt in
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = buffer.baseAddress
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in
        selected.run(size == 0 ? Data() : Data(bytes: data!, count: size))
        return 0
    }
}
exit(status)
#else
do {
    for run in try target.replay(Array(arguments.dropFirst(2))) {
        print("\(run.path): \(run.accepted ? "accepted" : "refused") (\(String(format: "%.3f", run.seconds)) s)")
    }
} catch {
    FileHandle.standardError.write(Data("blip2-fuzz: \(error)\n".utf8))
    exit(1)
}
#endif
