/// The tools' messages start with lowercase `error:`, as compilers, git and the tools' own messages do;
/// the argument parser writes `Error:`, so its text goes through here on its way to standard error.
public func lowercasingErrorPrefix(_ text: String) -> String {
    text.hasPrefix("Error: ") ? "error: " + text.dropFirst("Error: ".count) : text
}

