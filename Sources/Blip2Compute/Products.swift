import Blip2Core
import CKernels
import Foundation

// MARK: - The matrix product seam
//
// Every linear layer in the model goes through `linear`. Activations meeting weights whose type pairs with
// q8a are quantized once per call; the rows of W are then split across the worker pool and each part runs
// the tiled kernels of the context's instruction set (CKernels, docs/KERNELS.md).

extension ComputeContext {
    /// y[t, o] = sum_i x[t, i] * W[o, i] + b[o] for t < tokens. x: [tokens, in], y: [tokens, out]. With `split`,
    /// rows [0, split) and [split, tokens) get exactly what two calls would give them (`blip2_gemm_split`),
    /// the weights read once.
    public func linear(_ x: UnsafePointer<Float>, tokens: Int, _ layer: Linear, into y: UnsafeMutablePointer<Float>,
                       split: Int? = nil) {
        guard tokens > 0, layer.weight.rows > 0 else { return }
        if let productObserver { productObserver.observe(input: x, tokens: tokens, weight: layer.weight) }
        requireTiles(layer.weight)
        withUnsafePointer(to: layer) { one in
            product(x, tokens: tokens, UnsafeBufferPointer(start: one, count: 1), into: y, stride: layer.weight.rows, split: split)
        }
    }

    /// Several layers over the same input, their outputs side by side: y[t] = [layers[0](x[t]), layers[1](x[t]), ...]
    /// (row stride: the layers' outputs added up). Layers that share their input width and weight type (the
    /// q, k and v projections) run as one job: the input is quantized once and the threads meet once instead
    /// of once per layer. Every output is the value `linear` gives.
    public func linear(_ x: UnsafePointer<Float>, tokens: Int, concatenated layers: [Linear], into y: UnsafeMutablePointer<Float>,
                       split: Int? = nil) {
        guard tokens > 0, let first = layers.first else { return }
        if let productObserver {
            for layer in layers { productObserver.observe(input: x, tokens: tokens, weight: layer.weight) }
        }
        let stride = layers.reduce(0) { $0 + $1.weight.rows }
        for layer in layers { requireTiles(layer.weight) }
        let shared = layers.allSatisfy { $0.weight.type == first.weight.type && $0.weight.cols == first.weight.cols }
        if shared {
            layers.withUnsafeBufferPointer { product(x, tokens: tokens, $0, into: y, stride: stride, split: split) }
            return
        }
        var offset = 0
        for layer in layers {
            withUnsafePointer(to: layer) { one in
                product(x, tokens: tokens, UnsafeBufferPointer(start: one, count: 1), into: y + offset, stride: stride, split: split)
            }
            offset += layer.weight.rows
        }
    }

    /// Every type the model loader accepts (the writable ones) has tiles in every table; a test checks it
    /// (`everyWritableTypeHasTiles`), so a weight without them is a missing kernel, not bad input.
    private func requireTiles(_ weight: WeightMatrix) {
        precondition(hasTiles(weight.type), "\(isa) has no tiles for \(weight.type.name) (\(weight.name))")
    }

    /// Whether the kernel table multiplies this weight type (every type a model file can hold for a linear
    /// layer does; bf16 never reaches here from one).
    public func hasTiles(_ type: ElementType) -> Bool {
        kernels.pointee.matvec_fn(type) != nil
    }

    /// Layers sharing input width and a weight type with tiles, outputs side by side with row stride `stride`.
    private func product(_ x: UnsafePointer<Float>, tokens: Int, _ layers: UnsafeBufferPointer<Linear>,
                         into y: UnsafeMutablePointer<Float>, stride: Int, split: Int?) {
        guard let first = layers.first else { return }
        let type = first.weight.type, cols = first.weight.cols
        let quantize = type.takesQuantizedActivations, superBlocks = type.activation == BLIP2_ACTIVATION_Q8K
        let rowBytes = blip2_activation_row_bytes(type.activation, cols)
        let kernels = self.kernels, pool = self.pool
        let clock = productClock, started = clock == nil ? 0 : DispatchTime.now().uptimeNanoseconds
        var quantized: UInt64 = 0
        defer {
            if let clock {
                let operations = layers.reduce(0.0) { $0 + 2 * Double($1.weight.rows) * Double(cols) * Double(tokens) }
                clock.add(product: DispatchTime.now().uptimeNanoseconds - started, quantize: quantized, operations: operations)
            }
        }
        withActivationScratch(bytes: quantize ? tokens * rowBytes : 0) { buffer in
            var input = UnsafeRawPointer(x)
            if quantize {
                let quantizeQ8A = kernels.pointee.quantize_q8a!, quantizeQ8K = kernels.pointee.quantize_q8k!
                // Quantizing costs about one pass over x; worth sharing only when there are many tokens.
                let quantizeParts = tokens >= 16 ? min(pool.threads, tokens) : 1
                pool.run(parts: quantizeParts) { part, _ in
                    for t in (tokens * part / quantizeParts)..<(tokens * (part + 1) / quantizeParts) {
                        if superBlocks {
                            quantizeQ8K(x + t * cols, (buffer + t * rowBytes).assumingMemoryBound(to: blip2_block_q8k.self), cols)
                        } else {
                            quantizeQ8A(x + t * cols, (buffer + t * rowBytes).assumingMemoryBound(to: blip2_block_q8a.self), cols)
                        }
                    }
                }
                input = UnsafeRawPointer(buffer)
                if clock != nil { quantized = DispatchTime.now().uptimeNanoseconds - started }
            }

            // Rows go out in groups of 8 (a panel is 8 rows; every tile's height divides it or is a whole number
            // of panels, each computed alone), counted from each layer's first row, so a row's value does not
            // depend on the split. There are more parts than threads so a thread slowed by another process does
            // not hold up the rest.
            let groupRows = 8
            var groups = 0, rows = 0
            for layer in layers {
                groups += (layer.weight.rows + groupRows - 1) / groupRows
                rows += layer.weight.rows
            }
            let work = rows * cols * tokens
            let parts = work < 1 << 16 || pool.threads == 1 ? 1 : min(groups, 4 * pool.threads)
            let source = input, totalGroups = groups
            pool.run(parts: parts) { part, _ in
                let g0 = totalGroups * part / parts, g1 = totalGroups * (part + 1) / parts
                var first = 0, offset = 0
                for layer in layers {
                    let w = layer.weight, count = (w.rows + groupRows - 1) / groupRows
                    let lo = max(g0, first), hi = min(g1, first + count)
                    if lo < hi {
                        let r0 = (lo - first) * groupRows, r1 = min(w.rows, (hi - first) * groupRows)
                        let start = w.data + r0 / w.type.blockRows * w.groupBytes
                        blip2_gemm_split(kernels, w.type.rawValue, start, w.groupBytes, r1 - r0, source, rowBytes, tokens,
                                         split ?? tokens, cols, layer.bias.map { $0 + r0 }, y + offset + r0, stride)
                    }
                    first += count
                    offset += w.rows
                }
            }
        }
    }
}

extension blip2_kernels {
    /// The one-token tile for `type`, or nil where this table does not multiply it.
    func matvec_fn(_ type: ElementType) -> blip2_tile_fn? {
        withUnsafeBytes(of: matvec) { tiles in tiles.assumingMemoryBound(to: blip2_tile.self)[Int(type.rawValue)].fn }
    }
}
