import Foundation

// MARK: - Motion-JPEG byte stream -> JPEG images
//
// Cameras write Motion-JPEG as whole JPEG files back to back, sometimes with padding, HTTP part headers or
// noise in between. A JPEG cannot be cut on the first end-of-image marker after a start-of-image marker:
// marker segments carry arbitrary bytes (an EXIF thumbnail is a whole JPEG inside APP1), so the splitter
// walks the marker structure the way a decoder does: segment lengths are skipped, and only the
// entropy-coded data after a start-of-scan is searched for the next marker (where 0xFF is followed by a
// stuffed 0x00, a restart marker, or a real marker).

/// Splits a byte stream into the JPEG images it holds, one complete image (start-of-image through
/// end-of-image) at a time, however the stream is cut into chunks. Bytes outside any image are skipped
/// and counted; an image that breaks off, breaks the marker structure, or grows past `maxFrameBytes` is
/// reported and dropped, and the splitter looks for the next image. Memory is bounded by `maxFrameBytes`
/// whatever the input, so it can be fed untrusted bytes.
public struct MJPEGSplitter: Sendable {
    /// Why an image was dropped.
    public enum Fault: Equatable, Sendable, CustomStringConvertible {
        /// The stream ended, or a new image began, before this one's end-of-image marker.
        case truncated
        /// Longer than the limit (the bytes were counted, not kept), whether it ended or broke off.
        case tooLarge(limit: Int)
        /// A byte where the JPEG structure allows none (offset from the image's first byte).
        case invalidMarker(byte: UInt8, offset: Int)
        /// A marker segment whose length field is below 2.
        case invalidSegmentLength(marker: UInt8, offset: Int)

        public var description: String {
            switch self {
            case .truncated:
                return "the image breaks off before its end-of-image marker"
            case .tooLarge(let limit):
                return "the image is longer than \(limit) bytes"
            case .invalidMarker(let byte, let offset):
                return String(format: "not a JPEG marker at byte %d (0x%02X)", offset, byte)
            case .invalidSegmentLength(let marker, let offset):
                return String(format: "the 0xFF%02X segment at byte %d has a length below 2", marker, offset)
            }
        }
    }

    public enum Event: Equatable, Sendable {
        /// A complete image, from its start-of-image to its end-of-image marker.
        case frame(Data)
        /// An image that was dropped, and how many of its bytes had arrived.
        case dropped(Fault, bytes: Int)
    }

    /// Images longer than this are dropped (their bytes are not kept while they are skipped).
    public let maxFrameBytes: Int
    /// Bytes seen outside any image (padding, multipart headers, noise).
    public private(set) var skippedBytes = 0

    private enum State: Sendable {
        /// Outside an image, looking for 0xFF 0xD8.
        case seeking(afterFF: Bool)
        /// Inside an image where the next byte must be 0xFF.
        case markerStart
        /// After 0xFF: the marker code (more 0xFF are fill bytes).
        case markerCode
        case lengthHigh(marker: UInt8)
        case lengthLow(marker: UInt8, high: UInt8)
        case segment(remaining: Int, thenEntropy: Bool)
        /// Entropy-coded data after a start-of-scan segment.
        case entropy(afterFF: Bool)
    }

    private var state = State.seeking(afterFF: false)
    /// The image so far; empty once it passed the limit.
    private var frame = Data()
    /// Bytes of the image before the current chunk (counted even when not kept).
    private var frameBytesBefore = 0
    private var oversized = false
    private var lastFrameBytes = 0

    public init(maxFrameBytes: Int = 32 << 20) {
        precondition(maxFrameBytes >= 4, "a JPEG needs at least 4 bytes")
        self.maxFrameBytes = maxFrameBytes
    }

    /// True while an image has begun and not ended.
    public var inFrame: Bool {
        if case .seeking = state { return false }
        return true
    }

    /// Consumes one chunk of the stream, calling `emit` for every image completed or dropped in it.
    public mutating func push(_ chunk: UnsafeRawBufferPointer, _ emit: (Event) -> Void) {
        let count = chunk.count
        guard count > 0, let base = chunk.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
        // Where the current image's bytes start in this chunk (it may have begun in an earlier one).
        var runStart = 0
        var i = 0
        while i < count {
            switch state {
            case .seeking(let afterFF):
                if !afterFF {
                    guard let ff = Self.find(0xFF, base, from: i, to: count) else {
                        skippedBytes += count - i
                        i = count
                        continue
                    }
                    skippedBytes += ff - i
                    i = ff
                }
                // At 0xFF (possibly the last byte of the previous chunk).
                let byte = base[i]
                if !afterFF {
                    skippedBytes += 1
                    state = .seeking(afterFF: true)
                    i += 1
                } else if byte == 0xD8 {
                    skippedBytes -= 1
                    beginFrame()
                    runStart = i
                    i += 1
                } else if byte == 0xFF {
                    skippedBytes += 1
                    i += 1
                } else {
                    skippedBytes += 1
                    state = .seeking(afterFF: false)
                    i += 1
                }

            case .markerStart:
                if base[i] != 0xFF {
                    drop(.invalidMarker(byte: base[i], offset: offset(i, runStart)), through: i, runStart: runStart, emit)
                    i += 1
                    continue
                }
                state = .markerCode
                i += 1

            case .markerCode:
                let marker = base[i]
                switch marker {
                case 0xFF:
                    i += 1  // fill byte
                case 0xD8:
                    // A new image starts inside this one: the camera cut it short. Its 0xFF begins the new one.
                    let bytes = frameBytesBefore + (i - runStart) - 1
                    emit(.dropped(cutShort(bytes: bytes), bytes: bytes))
                    beginFrame()
                    runStart = i
                    i += 1
                case 0xD9:
                    finishFrame(base, through: i, runStart: runStart, emit)
                    i += 1
                case 0x01, 0xD0...0xD7:
                    state = .markerStart  // no length: TEM and restart markers
                    i += 1
                case 0x00, 0x02...0xBF:
                    drop(.invalidMarker(byte: marker, offset: offset(i, runStart)), through: i, runStart: runStart, emit)
                    i += 1
                default:
                    state = .lengthHigh(marker: marker)
                    i += 1
                }

            case .lengthHigh(let marker):
                state = .lengthLow(marker: marker, high: base[i])
                i += 1

            case .lengthLow(let marker, let high):
                let length = Int(high) << 8 | Int(base[i])
                guard length >= 2 else {
                    drop(.invalidSegmentLength(marker: marker, offset: offset(i, runStart) - 3), through: i, runStart: runStart, emit)
                    i += 1
                    continue
                }
                state = length == 2 ? (marker == 0xDA ? .entropy(afterFF: false) : .markerStart)
                    : .segment(remaining: length - 2, thenEntropy: marker == 0xDA)
                i += 1

            case .segment(let remaining, let thenEntropy):
                let step = min(remaining, count - i)
                i += step
                if step == remaining {
                    state = thenEntropy ? .entropy(afterFF: false) : .markerStart
                } else {
                    state = .segment(remaining: remaining - step, thenEntropy: thenEntropy)
                }

            case .entropy(let afterFF):
                if !afterFF {
                    guard let ff = Self.find(0xFF, base, from: i, to: count) else {
                        i = count
                        continue
                    }
                    state = .entropy(afterFF: true)
                    i = ff + 1
                    continue
                }
                switch base[i] {
                case 0x00, 0xD0...0xD7:
                    state = .entropy(afterFF: false)  // a stuffed 0xFF data byte, or a restart marker
                    i += 1
                case 0xFF:
                    i += 1
                default:
                    state = .markerCode  // a marker ends the scan; read it again as one
                }
            }
        }
        if inFrame { keep(base, from: runStart, to: count) }
    }

    /// Consumes bytes already in an array (tests, fuzzing); returns what `push` would emit.
    public mutating func push(_ bytes: [UInt8]) -> [Event] {
        var events: [Event] = []
        bytes.withUnsafeBytes { push($0) { events.append($0) } }
        return events
    }

    /// The stream ended: an image in progress is reported as truncated.
    public mutating func finish() -> Event? {
        defer { reset() }
        guard inFrame else { return nil }
        return .dropped(cutShort(bytes: frameBytesBefore), bytes: frameBytesBefore)
    }

    /// Why an image that broke off after `bytes` is dropped: past the limit it was never going to be
    /// kept, and saying so tells the camera's owner what to change.
    private func cutShort(bytes: Int) -> Fault {
        oversized || bytes > maxFrameBytes ? .tooLarge(limit: maxFrameBytes) : .truncated
    }

    /// Forgets any image in progress (a reconnected stream starts afresh) without reporting it.
    public mutating func reset() {
        state = .seeking(afterFF: false)
        frame = Data()
        frameBytesBefore = 0
        oversized = false
    }

    /// Splits a whole buffer: the frames and drops, including a truncated image at the end.
    public static func split(_ bytes: [UInt8], maxFrameBytes: Int = 32 << 20) -> [Event] {
        var splitter = MJPEGSplitter(maxFrameBytes: maxFrameBytes)
        var events = splitter.push(bytes)
        if let last = splitter.finish() { events.append(last) }
        return events
    }

    // MARK: Helpers

    private func offset(_ i: Int, _ runStart: Int) -> Int { frameBytesBefore + (i - runStart) }

    /// Starts an image at a 0xFF 0xD8 whose 0xFF may have been in an earlier chunk.
    private mutating func beginFrame() {
        frame.removeAll(keepingCapacity: true)
        // Room for an image like the last one, so a steady stream grows each buffer once.
        frame.reserveCapacity(min(lastFrameBytes + lastFrameBytes / 8, maxFrameBytes))
        frame.append(0xFF)
        frameBytesBefore = 1
        oversized = false
        state = .markerStart
    }

    /// Appends chunk bytes to the image unless that would pass the limit, after which they are only counted.
    private mutating func keep(_ base: UnsafePointer<UInt8>, from start: Int, to end: Int) {
        let length = end - start
        if !oversized, frameBytesBefore + length <= maxFrameBytes {
            frame.append(base + start, count: length)
        } else if !oversized {
            oversized = true
            frame = Data()
        }
        frameBytesBefore += length
    }

    private mutating func finishFrame(_ base: UnsafePointer<UInt8>, through i: Int, runStart: Int, _ emit: (Event) -> Void) {
        keep(base, from: runStart, to: i + 1)
        if oversized {
            emit(.dropped(.tooLarge(limit: maxFrameBytes), bytes: frameBytesBefore))
        } else {
            lastFrameBytes = frame.count
            emit(.frame(frame))
        }
        frame = Data()
        frameBytesBefore = 0
        oversized = false
        state = .seeking(afterFF: false)
    }

    private mutating func drop(_ fault: Fault, through i: Int, runStart: Int, _ emit: (Event) -> Void) {
        emit(.dropped(fault, bytes: frameBytesBefore + (i - runStart) + 1))
        frame.removeAll(keepingCapacity: true)
        frameBytesBefore = 0
        oversized = false
        state = .seeking(afterFF: false)
    }

    @inline(__always)
    private static func find(_ byte: UInt8, _ base: UnsafePointer<UInt8>, from start: Int, to end: Int) -> Int? {
        guard start < end, let hit = memchr(base + start, Int32(byte), end - start) else { return nil }
        return base.distance(to: hit.assumingMemoryBound(to: UInt8.self))
    }
}
