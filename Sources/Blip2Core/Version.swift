/// The version of the tools, recorded in every model file they write.
public enum Blip2Version {
    public static let string = "0.1.0"
}
