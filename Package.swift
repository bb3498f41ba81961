// swift-tools-version: 6.1
import PackageDescription

// Dependencies point one way (a target uses only those listed above it; docs/ARCHITECTURE.md draws them):
//   CKernels -> Blip2Core -> Blip2Compute -> Blip2Models -> Blip2Pipeline -> Blip2Watch -> Blip2Server -> executables
//   Blip2Core -> Blip2ModelFile -> Blip2Convert, Blip2Models
//   Blip2Configs (configs + weight manifest) depends on nothing; Blip2Tokenizer and Blip2Image only on Blip2Core
//   (regular-file reading). The model file's reports, the converter, the model and the pipeline read them.
//   Blip2Generation stands alone and serves the pipeline. Blip2Fuzz drives every reader of untrusted bytes for
//   the fuzzer. Blip2CommandLine (terminal output) serves the executables only.
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
        // The kiosk server only (Blip2Server). No default traits: swift-configuration is not needed.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // Already in Hummingbird's graph; named for the server's own signal handling and log level.
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        // Already in Hummingbird's graph; named for the server's `Expect: 100-continue` channel handler.
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
    ],
    targets: [
        // MARK: System libraries
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CJPEG", pkgConfig: "libjpeg", providers: [.apt(["libjpeg-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
        // Line editing and history for `blip2 chat` on a terminal.
        .systemLibrary(name: "CEdit", pkgConfig: "libedit", providers: [.apt(["libedit-dev"])]),

        // MARK: Kernels (C: block formats, scalar references, SIMD paths)
        // No unsafe flags (such as -O2 for debug builds): packages depending on ours by version could not
        // build it. Debug kernels at -O0 cost the model, pipeline and kernel tests about 13 s more CPU
        // (16 -> 29 s); speed is measured on release builds only.
        .target(name: "CKernels"),
        // The kiosk page's HTML, CSS and JavaScript (page/), embedded at compile time with C23 #embed.
        .target(name: "CPage", exclude: ["page"]),
        // libjpeg and libpng driven from C: their fatal errors longjmp, which must never cross a Swift frame,
        // so each decode is one C call that turns every failure into an outcome code.
        .target(name: "CImageDecode", dependencies: ["CJPEG", "CPNG"]),

        // MARK: Libraries
        .target(name: "Blip2Core", dependencies: ["CKernels"]),
        // The compute context (kernel table, worker pool, scratch), the matrix products and the parallel ops.
        .target(name: "Blip2Compute", dependencies: ["Blip2Core", "CKernels"]),
        .target(name: "Blip2Configs"),
        // The format, its reader and writer, the importance matrix file, and the per-tensor rows that the
        // converter's summary and `inspect` share. The library product: it stands on Blip2Core and Blip2Configs.
        .target(name: "Blip2ModelFile", dependencies: ["Blip2Core", "CZstd", "Blip2Configs"]),
        .target(name: "Blip2Convert", dependencies: ["Blip2ModelFile", "Blip2Configs", "Blip2Core", "Blip2Tokenizer", "Blip2Image", "CKernels"]),
        .target(name: "Blip2Tokenizer", dependencies: ["Blip2Core"]),
        .target(name: "Blip2Image", dependencies: ["Blip2Core", "CImageDecode"]),
        // BLIP-2: vision transformer, Q-Former, projection, OPT; weights are views into the model file.
        .target(name: "Blip2Models", dependencies: ["Blip2Compute", "Blip2ModelFile", "Blip2Configs", "Blip2Core", "CKernels"]),
        // Decoding strategies over any language model state (greedy, beam search, sampling) and the table of
        // generation settings that the CLI's flags and the server's fields both read.
        .target(name: "Blip2Generation"),
        // Image + prompt in, text out: the four tasks, chat sessions, timings.
        .target(name: "Blip2Pipeline", dependencies: ["Blip2Compute", "Blip2Models", "Blip2Generation", "Blip2Tokenizer", "Blip2Image", "Blip2ModelFile", "Blip2Configs",
                                                      "Blip2Core"]),
        // Camera feeds: MJPEG streams (pipe, file, HTTP) and folders, latest-frame-wins, change detection, the watch loop.
        .target(name: "Blip2Watch", dependencies: ["Blip2Pipeline", "Blip2Image", "Blip2Generation", "Blip2Core"]),
        // `blip2 serve`: HTTP routes, the page, the request queue feeding one model worker, sessions, metrics,
        // and a camera (`--camera`) captioned by that same worker.
        .target(
            name: "Blip2Server",
            dependencies: [
                "Blip2Pipeline", "Blip2Generation", "Blip2Image", "Blip2Core", "Blip2ModelFile", "Blip2Models", "Blip2Watch", "CPage",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
            ]
        ),
        // Fuzz targets: every reader of untrusted bytes, driven as the tools drive it (Tools/fuzz.sh).
        .target(name: "Blip2Fuzz", dependencies: ["Blip2Pipeline", "Blip2Watch", "Blip2Convert", "Blip2Models", "Blip2ModelFile", "Blip2Configs", "Blip2Image", "Blip2Tokenizer", "Blip2Core"]),
        // Shared by the executables: progress bars, tables, sizes, error reporting, and the `inspect` report
        // (which reads the tokenizer carried in a file).
        .target(name: "Blip2CommandLine", dependencies: ["Blip2Core", "Blip2ModelFile", "Blip2Configs", "Blip2Tokenizer",
                                                         .product(name: "ArgumentParser", package: "swift-argument-parser")]),

        // MARK: Executables (thin)
        .executableTarget(
            name: "blip2",
            dependencies: [
                "Blip2ModelFile", "Blip2Configs", "Blip2Core", "Blip2Tokenizer", "Blip2CommandLine", "Blip2Pipeline",
                "Blip2Generation", "Blip2Image", "Blip2Compute", "Blip2Server", "CEdit", "Blip2Watch",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Runs a fuzz target under libFuzzer (Tools/fuzz.sh builds it so) or replays files through it.
        .executableTarget(name: "blip2-fuzz", dependencies: ["Blip2Fuzz"]),
        // Quick kernel throughput on the real shapes (Benchmarks/KernelBench; release builds).
        .executableTarget(name: "blip2-kernel-bench", dependencies: ["Blip2Compute", "Blip2Core", "CKernels"], path: "Benchmarks/KernelBench"),
        .executableTarget(
            name: "blip2-quantize",
            dependencies: [
                "Blip2Convert", "Blip2CommandLine", "Blip2ModelFile", "Blip2Core",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        // MARK: Tests
        .testTarget(name: "Blip2CoreTests", dependencies: ["Blip2Core", "CKernels"]),
        .testTarget(name: "Blip2ModelFileTests", dependencies: ["Blip2ModelFile", "Blip2Core"]),
        .testTarget(name: "Blip2ConvertTests", dependencies: ["Blip2Convert", "Blip2ModelFile", "Blip2Configs", "Blip2Core", "CKernels"]),
        .testTarget(name: "Blip2TokenizerTests", dependencies: ["Blip2Tokenizer"]),
        .testTarget(name: "Blip2ImageTests", dependencies: ["Blip2Image"]),
        .testTarget(name: "Blip2ModelsTests", dependencies: ["Blip2Models", "Blip2Compute", "Blip2Convert", "Blip2ModelFile", "Blip2Core"]),
        .testTarget(name: "Blip2PipelineTests", dependencies: ["Blip2Pipeline", "Blip2Compute", "Blip2Convert", "Blip2Generation", "Blip2Core",
                                                               "Blip2ModelFile", "CKernels"]),
        .testTarget(name: "Blip2GenerationTests", dependencies: ["Blip2Generation"]),
        .testTarget(name: "Blip2CommandLineTests", dependencies: ["Blip2CommandLine", "Blip2ModelFile", "Blip2Core"]),
        // Every kernel of every instruction set the CPU runs, against the scalar reference; the worker pool.
        .testTarget(name: "Blip2KernelTests", dependencies: ["Blip2Compute", "Blip2Core", "CKernels"]),
        .testTarget(name: "Blip2WatchTests", dependencies: ["Blip2Watch", "Blip2Pipeline", "Blip2Image"]),
        // Runs the built executables: exit codes, stderr, --json contracts.
        // Runs `blip2 serve` and talks to it over HTTP; unit tests of the server's parts.
        .testTarget(name: "Blip2ServerTests", dependencies: ["blip2", "Blip2Server", "Blip2Pipeline", "Blip2Watch", "Blip2Generation", "Blip2Core"]),
        .testTarget(name: "Blip2CLITests", dependencies: ["blip2", "blip2-quantize", "blip2-kernel-bench", "Blip2ModelFile", "Blip2Core",
                                                         "Blip2Generation"]),
        // Replays every fuzz seed and every input that ever crashed a target (Tests/Fuzz).
        .testTarget(name: "Blip2FuzzTests", dependencies: ["Blip2Fuzz"]),
    ],
    // Data races the compiler can see are errors; what it cannot see is listed in docs/ARCHITECTURE.md.
    swiftLanguageModes: [.v6]
)
