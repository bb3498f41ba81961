import Blip2Image
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Frames and where they come from

/// One image as it arrived from the camera.
public struct Frame: Sendable {
    /// 1-based position among every frame the source delivered, broken ones included.
    public let number: Int
    /// The encoded image (JPEG, or PNG from a folder).
    public let data: Data
    /// How messages name it: the file's path, or "frame N".
    public let name: String
    /// Monotonic arrival time (`DispatchTime` nanoseconds), for latency.
    public let arrival: UInt64
    /// Wall-clock arrival time, for the output lines.
    public let arrivalDate: Date

    /// The file it was read from (a folder's frames); nil for a frame of a stream.
    public let file: String?

    public init(number: Int, data: Data, name: String, arrival: UInt64, arrivalDate: Date, file: String? = nil) {
        self.number = number
        self.data = data
        self.name = name
        self.arrival = arrival
        self.arrivalDate = arrivalDate
        self.file = file
    }
}

/// What a source hands its frames to. Called from the source's own thread.
public protocol FrameSink: AnyObject, Sendable {
    /// Set once the consumer stops; a source checks it at least every few hundred milliseconds and returns.
    var isCancelled: Bool { get }
    /// A complete image; `name` nil means "frame N".
    func deliver(_ data: Data, name: String?)
    /// A frame that arrived broken (counted, reported, skipped).
    func reject(_ reason: String, name: String?)
    /// Something the user should know that is not a frame (a reconnection, a folder being watched).
    func notice(_ message: String)
}

/// A camera feed: runs on a thread of its own until the feed ends (returns), fails for good (throws) or
/// the sink is cancelled (returns soon after).
public protocol FrameSource: Sendable {
    /// How messages name it: `standard input`, a URL (password masked), a folder.
    var name: String { get }
    /// How records name it: as the user gave it (`-` for standard input), a URL's password masked.
    var argument: String { get }
    func run(into sink: FrameSink) throws
}

extension FrameSource {
    public var argument: String { name }
}

public struct FrameSourceError: Error, CustomStringConvertible, Equatable, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Limits applied to every source.
public struct FrameLimits: Sendable, Equatable {
    /// Stream frames (JPEGs in a byte stream) longer than this are dropped unread.
    public var maxFrameBytes: Int = 32 << 20
    /// Image files in a watched folder larger than this are refused before they are read.
    public var maxFileBytes: Int = ImageDecodeOptions().maxFileBytes

    public init(maxFrameBytes: Int = 32 << 20, maxFileBytes: Int = ImageDecodeOptions().maxFileBytes) {
        self.maxFrameBytes = maxFrameBytes
        self.maxFileBytes = maxFileBytes
    }
}

public enum FrameSources {
    /// The source named on the command line: `-` (MJPEG on standard input), an `http://` URL of an MJPEG
    /// stream, a folder (new JPEG/PNG files as they appear), or a file holding an MJPEG stream.
    public static func open(_ spec: String, limits: FrameLimits = FrameLimits()) throws -> FrameSource {
        if spec == "-" { return StreamSource(path: nil, limits: limits) }
        let lowered = spec.lowercased()
        if lowered.hasPrefix("http://") { return HTTPSource(url: try HTTPURL(parsing: spec), limits: limits) }
        if lowered.hasPrefix("https://") {
            throw FrameSourceError("\(spec): https is not supported; give the camera's http:// URL (on a trusted network) or relay it through a local proxy")
        }
        if lowered.contains("://") {
            throw FrameSourceError("\(spec): only http:// URLs are read; for other streams pipe them through ffmpeg into `-`")
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: spec, isDirectory: &isDirectory) else {
            throw FrameSourceError("\(spec): no such file or folder; give -, an http:// URL, a folder or an MJPEG file")
        }
        if isDirectory.boolValue { return FolderSource(path: spec, limits: limits) }
        return StreamSource(path: spec, limits: limits)
    }
}

// MARK: - Byte streams: standard input, a pipe, a file

/// An MJPEG byte stream read from standard input (`path` nil) or a file or named pipe.
public struct StreamSource: FrameSource {
    public let path: String?
    public let limits: FrameLimits
    public var name: String { path ?? "standard input" }
    public var argument: String { path ?? "-" }

    public init(path: String?, limits: FrameLimits = FrameLimits()) {
        self.path = path
        self.limits = limits
    }

    public func run(into sink: FrameSink) throws {
        let fd: Int32
        if let path {
            fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw FrameSourceError("\(path): cannot open (\(String(cString: strerror(errno))))") }
        } else {
            fd = STDIN_FILENO
        }
        defer { if path != nil { close(fd) } }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: readChunkBytes, alignment: 16)
        defer { buffer.deallocate() }
        var splitter = MJPEGSplitter(maxFrameBytes: limits.maxFrameBytes)
        var images = 0
        var head = Data()   // the first bytes, to name what came instead of a stream
        while !sink.isCancelled {
            guard try waitReadable(fd, milliseconds: cancelCheckMilliseconds, name: name) else { continue }
            let count = read(fd, buffer.baseAddress, buffer.count)
            if count == 0 { break }
            if count < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                throw FrameSourceError("\(name): read failed (\(String(cString: strerror(errno))))")
            }
            if head.count < 8 { head.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[0..<min(count, 8 - head.count)])) }
            splitter.push(UnsafeRawBufferPointer(rebasing: buffer[0..<count])) { event in
                images += 1
                forward(event, to: sink)
            }
        }
        if sink.isCancelled { return }
        if let last = splitter.finish() {
            images += 1
            forward(last, to: sink)
        }
        // Not one frame in the whole input: it was not a camera stream, and saying so beats a silent success.
        if images == 0, splitter.skippedBytes > 0 {
            let png = head.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
            throw FrameSourceError("\(name): \(png ? "a PNG image" : "no JPEG image in its \(splitter.skippedBytes) bytes"), not a Motion-JPEG stream; "
                                   + "to caption one picture: blip2 caption MODEL \(name)")
        }
    }
}

/// Reads of this size keep a 30 fps 1080p stream to a handful of system calls per frame.
let readChunkBytes = 64 << 10
/// How often a blocked source looks at whether it should stop.
let cancelCheckMilliseconds: Int32 = 200

/// Hands a splitter event to the sink.
func forward(_ event: MJPEGSplitter.Event, to sink: FrameSink) {
    switch event {
    case .frame(let data): sink.deliver(data, name: nil)
    case .dropped(let fault, let bytes): sink.reject("\(fault) (\(bytes) bytes)", name: nil)
    }
}

/// Waits until `fd` can be read (or has hung up) for at most `milliseconds`; false on timeout.
func waitReadable(_ fd: Int32, milliseconds: Int32, name: String) throws -> Bool {
    var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    let ready = poll(&descriptor, 1, milliseconds)
    if ready < 0 {
        if errno == EINTR { return false }
        throw FrameSourceError("\(name): poll failed (\(String(cString: strerror(errno))))")
    }
    return ready > 0
}
