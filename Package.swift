// swift-tools-version: 6.0
import PackageDescription

// Dependencies point one way:
//   CKernels -> Blip2Core -> Blip2ModelFile -> Blip2Convert -> executables
//   Blip2Config (pure configuration + weight manifest) is used by Blip2Convert and the model.
//   Blip2Tokenizer and Blip2Image use only Blip2Core (regular-file reading) and are used by the pipeline and CLIs.
let package = Package(
    name: "blip2-edge",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "blip2", targets: ["blip2"]),
        .executable(name: "blip2-quantize", targets: ["blip2-quantize"]),
        .library(name: "Blip2ModelFile", targets: ["Blip2ModelFile"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // MARK: System libraries
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CJPEG", pkgConfig: "libjpeg", providers: [.apt(["libjpeg-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),

        // MARK: Kernels (C: block formats, scalar references, SIMD paths)
        .target(
            name: "CKernels",
            cSettings: [.unsafeFlags(["-O2"], .when(configuration: .debug))]
        ),

        // MARK: Libraries
        .target(name: "Blip2Core", dependencies: ["CKernels"]),
        .target(name: "Blip2Config"),
        .target(name: "Blip2ModelFile", dependencies: ["Blip2Core", "CZstd"]),
        .target(name: "Blip2Convert", dependencies: ["Blip2ModelFile", "Blip2Config", "Blip2Core", "Blip2Tokenizer", "Blip2Image"]),
        .target(name: "Blip2Tokenizer", dependencies: ["Blip2Core"]),
        .target(name: "Blip2Image", dependencies: ["Blip2Core", "CJPEG", "CPNG"]),
        // BLIP-2: vision transformer, Q-Former, projection, OPT; weights are views into the model file.
        .target(name: "Blip2Model", dependencies: ["Blip2ModelFile", "Blip2Config", "Blip2Core", "CKernels"]),
        // Decoding strategies over any language model state: greedy, beam search, sampling.
        .target(name: "Blip2Generation"),
        // Image + prompt in, text out: the four tasks, chat sessions, timings.
        .target(name: "Blip2Pipeline", dependencies: ["Blip2Model", "Blip2Generation", "Blip2Tokenizer", "Blip2Image", "Blip2ModelFile", "Blip2Config"]),
        // Fuzz targets: every reader of untrusted bytes, driven as the tools drive it (Tools/fuzz.sh).
        .target(name: "Blip2Fuzz", dependencies: ["Blip2Pipeline", "Blip2Convert", "Blip2Model", "Blip2ModelFile", "Blip2Config", "Blip2Image", "Blip2Tokenizer", "Blip2Core"]),
        // Terminal helpers shared by the executables: progress bars, sizes, error reporting.
        .target(name: "Blip2CommandLine", dependencies: ["Blip2Core"]),

        // MARK: Executables (thin)
        .executableTarget(
            name: "blip2",
            dependencies: [
                "Blip2ModelFile", "Blip2Config", "Blip2Core", "Blip2Tokenizer", "Blip2CommandLine", "Blip2Pipeline",
                "Blip2Generation", "Blip2Image", "Blip2Model",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Runs a fuzz target under libFuzzer (Tools/fuzz.sh builds it so) or replays files through it.
        .executableTarget(name: "blip2-fuzz", dependencies: ["Blip2Fuzz"]),
        // Quick kernel throughput on the real shapes (Benchmarks/KernelBench; release builds).
        .executableTarget(name: "blip2-kernel-bench", dependencies: ["Blip2Model", "Blip2Core", "CKernels"], path: "Benchmarks/KernelBench"),
        .executableTarget(
            name: "blip2-quantize",
            dependencies: [
                "Blip2Convert", "Blip2CommandLine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        // MARK: Tests
        .testTarget(name: "Blip2CoreTests", dependencies: ["Blip2Core", "CKernels"]),
        .testTarget(name: "Blip2ModelFileTests", dependencies: ["Blip2ModelFile", "Blip2Core"]),
        .testTarget(name: "Blip2ConvertTests", dependencies: ["Blip2Convert", "Blip2ModelFile", "Blip2Config"]),
        .testTarget(name: "Blip2TokenizerTests", dependencies: ["Blip2Tokenizer"]),
        .testTarget(name: "Blip2ImageTests", dependencies: ["Blip2Image"]),
        .testTarget(name: "Blip2ModelTests", dependencies: ["Blip2Model", "Blip2Convert", "Blip2ModelFile"]),
        .testTarget(name: "Blip2PipelineTests", dependencies: ["Blip2Pipeline", "Blip2Convert", "Blip2Generation", "Blip2Core"]),
        .testTarget(name: "Blip2GenerationTests", dependencies: ["Blip2Generation"]),
        // Every kernel of every instruction set the CPU runs, against the scalar reference; the worker pool.
        .testTarget(name: "Blip2KernelTests", dependencies: ["Blip2Model", "Blip2Core", "CKernels"]),
        // Runs the built executables: exit codes, stderr, --json contracts.
        .testTarget(name: "Blip2CLITests", dependencies: ["blip2", "blip2-quantize", "Blip2ModelFile", "Blip2Core"]),
        // Replays every fuzz seed and every input that ever crashed a target (Tests/Fuzz).
        .testTarget(name: "Blip2FuzzTests", dependencies: ["Blip2Fuzz"]),
    ],
    swiftLanguageModes: [.v5]
)
