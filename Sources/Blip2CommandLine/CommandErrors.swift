import ArgumentParser

/// The tools' messages start with lowercase `error:`, as compilers, git and the tools' own messages do;
/// the argument parser writes `Error:`, so its text goes through here on its way to standard error.
public func lowercasingErrorPrefix(_ text: String) -> String {
    text.hasPrefix("Error: ") ? "error: " + text.dropFirst("Error: ".count) : text
}

/// The one form of a refused value: the flag, the value as given, and what it must be
/// (`error: --min-change 2: it must be between 0 and 1`).
public func invalidValue(_ flag: String, _ value: CustomStringConvertible, mustBe requirement: String) -> ValidationError {
    var text = value.description
    // 2, not 2.0: the value as it was most likely typed.
    if let number = value as? Double, number.isFinite, number == number.rounded(), abs(number) < 1e15 { text = String(Int(number)) }
    return ValidationError("\(flag) \(text): it must be \(requirement)")
}
