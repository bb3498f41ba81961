/// A fixed-size buffer allocated once per generation call and reused by every step, so the per-token loops
/// neither allocate nor fight Swift's exclusivity rules over arrays borrowed in nested closures.
final class Scratch<Element> {
    let buffer: UnsafeMutableBufferPointer<Element>

    init(count: Int, initialValue: Element) {
        buffer = .allocate(capacity: count)
        buffer.initialize(repeating: initialValue)
    }

    deinit {
        buffer.deinitialize()
        buffer.deallocate()
    }

    var count: Int { buffer.count }

    subscript(index: Int) -> Element {
        get { buffer[index] }
        set { buffer[index] = newValue }
    }

    /// The first `count` elements.
    func prefix(_ count: Int) -> UnsafeMutableBufferPointer<Element> {
        UnsafeMutableBufferPointer(rebasing: buffer[0..<count])
    }
}
