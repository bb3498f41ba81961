import Blip2CommandLine

extension Blip2Quantize {
    /// Through `ToolMain`: `error:` messages, as blip2's.
    static func main() async {
        await ToolMain.run(Blip2Quantize.self)
    }
}
