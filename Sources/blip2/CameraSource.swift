import ArgumentParser
import Blip2CommandLine
import Blip2Watch
#if canImport(Glibc)
import Glibc
#endif

/// Opens a camera source as `blip2 watch` and `blip2 serve --camera` take it; a terminal on standard input
/// or a bad source is an error on stderr naming `label`, before any model is loaded.
/// `pipeline` is the command line the message suggests for `-`.
func openCameraSource(_ source: String, label: String, pipeline: String) throws -> FrameSource {
    if source == "-", isatty(STDIN_FILENO) == 1 {
        printError("error: \(label) -: standard input is a terminal; pipe a Motion-JPEG stream into it (rpicam-vid ... -o - | \(pipeline))")
        throw ExitCode.failure
    }
    do { return try FrameSources.open(source) } catch {
        printError("error: \(label) \(error)")
        throw ExitCode.failure
    }
}
