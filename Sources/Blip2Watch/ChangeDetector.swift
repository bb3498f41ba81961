import Blip2Image

/// How much a frame differs from the last one captioned, in 0...1: both are reduced to a grid of at most
/// 32 x 32 cell averages of their luma, and the cells' mean absolute difference is divided by 255.
/// Averaging whole cells makes sensor noise and JPEG artifacts cancel out, so a still scene measures near
/// 0 while a person walking into view moves several cells; it costs one pass over the decoded pixels,
/// next to seconds of model time for a caption.
public struct ChangeDetector: Sendable {
    public static let gridSide = 32

    private struct Thumbnail: Sendable {
        var imageWidth = 0
        var imageHeight = 0
        var columns = 0
        var rows = 0
        var cells: [UInt8] = []
    }

    private var reference: Thumbnail?
    private var candidate = Thumbnail()
    /// Per-cell sums of one band of rows, reused.
    private var sums: [UInt64] = []

    public init() {}

    /// The difference between `image` and the accepted reference (1 when there is none, or the frame size
    /// changed). The image is remembered as the candidate for `accept()`.
    public mutating func measure(_ image: RGBImage) -> Double {
        Self.reduce(image, into: &candidate, sums: &sums)
        guard let reference, reference.imageWidth == candidate.imageWidth, reference.imageHeight == candidate.imageHeight else {
            return 1
        }
        var total = 0
        for i in 0..<candidate.cells.count {
            total += abs(Int(candidate.cells[i]) - Int(reference.cells[i]))
        }
        return Double(total) / Double(candidate.cells.count * 255)
    }

    /// Makes the frame last measured the reference that later frames are compared with.
    public mutating func accept() {
        if reference == nil { reference = Thumbnail() }
        swap(&reference!, &candidate)
    }

    /// Luma weights: (77 R + 150 G + 29 B) / 256, close to BT.601's and exact at 0 and 255.
    static let weights: (red: UInt64, green: UInt64, blue: UInt64) = (77, 150, 29)

    /// Cell averages of `image`'s luma: cell (column c, row r) covers pixels x in [c W / columns,
    /// (c + 1) W / columns) and likewise for rows, so the cells tile the image exactly. Sums are kept in
    /// 64 bits whatever the image size, and rounded once per cell.
    private static func reduce(_ image: RGBImage, into thumbnail: inout Thumbnail, sums: inout [UInt64]) {
        let width = image.width, height = image.height
        let columns = min(gridSide, width), rows = min(gridSide, height)
        thumbnail.imageWidth = width
        thumbnail.imageHeight = height
        thumbnail.columns = columns
        thumbnail.rows = rows
        if thumbnail.cells.count != columns * rows { thumbnail.cells = [UInt8](repeating: 0, count: columns * rows) }
        if sums.count < columns { sums = [UInt64](repeating: 0, count: columns) }
        image.pixels.withUnsafeBufferPointer { pixels in
            sums.withUnsafeMutableBufferPointer { sums in
                thumbnail.cells.withUnsafeMutableBufferPointer { cells in
                    for row in 0..<rows {
                        let y0 = row * height / rows, y1 = (row + 1) * height / rows
                        for column in 0..<columns { sums[column] = 0 }
                        for y in y0..<y1 {
                            var p = y * width * 3
                            for column in 0..<columns {
                                let x0 = column * width / columns, x1 = (column + 1) * width / columns
                                var sum: UInt64 = 0
                                for _ in x0..<x1 {
                                    sum &+= weights.red * UInt64(pixels[p]) + weights.green * UInt64(pixels[p + 1]) + weights.blue * UInt64(pixels[p + 2])
                                    p += 3
                                }
                                sums[column] &+= sum
                            }
                        }
                        for column in 0..<columns {
                            let x0 = column * width / columns, x1 = (column + 1) * width / columns
                            let scale = UInt64((x1 - x0) * (y1 - y0)) * 256
                            cells[row * columns + column] = UInt8((sums[column] + scale / 2) / scale)
                        }
                    }
                }
            }
        }
    }
}
