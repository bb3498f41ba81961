import Blip2CommandLine

extension Blip2 {
    /// Through `ToolMain`: `error:` messages and "did you mean" for mistyped commands.
    static func main() async {
        await ToolMain.run(Blip2.self)
    }
}
