#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// libjpeg and libpng report a fatal error by calling a handler that must never return: C callers
// longjmp back to a setjmp point, but Swift can neither call setjmp nor safely longjmp into its own
// frames. So each decode runs on a thread of its own, and the handler ends that thread with
// pthread_exit. glibc implements that as a forced unwind back to the thread's start (or, where a frame
// has no unwind information, a longjmp to it), which is the same non-local exit the libraries'
// own examples use, and the libraries are built to be destroyed after such an exit: every allocation
// they make is owned by their decompress/read structure, which the calling thread destroys after
// joining. The decoding thread therefore only touches memory reached through raw pointers (no Swift
// references whose releases the abandoned frames would skip).

/// Work for a decoding thread: a C function pointer (so it captures nothing) and its argument.
typealias GuardedThreadBody = @convention(c) (UnsafeMutableRawPointer) -> Void

private struct GuardedCall {
    var body: GuardedThreadBody
    var argument: UnsafeMutableRawPointer
}

#if canImport(Glibc)
private let guardedThreadStart: @convention(c) (UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? = { raw in
    if let call = raw?.assumingMemoryBound(to: GuardedCall.self) { call.pointee.body(call.pointee.argument) }
    return nil
}
#else
private let guardedThreadStart: @convention(c) (UnsafeMutableRawPointer) -> UnsafeMutableRawPointer? = { raw in
    let call = raw.assumingMemoryBound(to: GuardedCall.self)
    call.pointee.body(call.pointee.argument)
    return nil
}
#endif

enum GuardedThread {
    /// Stack for the decoding thread: libjpeg and libpng keep their buffers on the heap and need far less.
    static let stackSize = 1 << 20

    /// Runs `body(argument)` on a new thread and waits for it to end, normally or through `abandon()`.
    /// Returns a description of the failure when the thread could not be started.
    static func run(_ body: GuardedThreadBody, argument: UnsafeMutableRawPointer) -> String? {
        let call = UnsafeMutablePointer<GuardedCall>.allocate(capacity: 1)
        call.initialize(to: GuardedCall(body: body, argument: argument))
        defer { call.deinitialize(count: 1); call.deallocate() }
        var attributes = pthread_attr_t()
        guard pthread_attr_init(&attributes) == 0 else { return "pthread_attr_init failed" }
        defer { pthread_attr_destroy(&attributes) }
        _ = pthread_attr_setstacksize(&attributes, stackSize)
        #if canImport(Glibc)
        var thread = pthread_t()
        let status = pthread_create(&thread, &attributes, guardedThreadStart, call)
        guard status == 0 else { return "pthread_create failed: \(String(cString: strerror(status)))" }
        pthread_join(thread, nil)
        #else
        var thread: pthread_t?
        let status = pthread_create(&thread, &attributes, guardedThreadStart, call)
        guard status == 0, let thread else { return "pthread_create failed: \(String(cString: strerror(status)))" }
        pthread_join(thread, nil)
        #endif
        return nil
    }

    /// Ends the calling decoding thread at once. Only for the libraries' fatal-error handlers, which run
    /// on a thread started by `run`.
    static func abandon() -> Never {
        pthread_exit(nil)
    }
}
