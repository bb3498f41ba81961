import Foundation

/// Why `run` could not start serving, in the command line's words: the HTTP stack's errors name a system
/// call and an errno (`bind(descriptor:ptr:bytes:): Address already in use) (errno: 98)`); a user needs the
/// cause and the flag to change.
public func describeStartError(_ error: Error, host: String) -> String {
    let text = String(describing: error)
    if text.contains("UnknownHost") {
        return "cannot resolve the host name '\(host)' (check --host; 0.0.0.0 listens on every interface)"
    }
    guard let match = text.firstMatch(of: #/\(errno: (\d+)\)/#), let code = Int32(match.1) else { return text }
    switch code {
    case EADDRINUSE: return "address already in use (try another --port, or --port 0 for any free one)"
    case EADDRNOTAVAIL: return "the address is not one of this machine's (check --host; 0.0.0.0 listens on every interface)"
    case EACCES: return "permission denied (ports below 1024 need root; try --port 8080)"
    default: return String(cString: strerror(code)).lowercased()
    }
}
