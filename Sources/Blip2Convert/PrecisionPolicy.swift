import Blip2Configs
import Blip2Core
import Foundation
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Precision policy
//
// What each weight is stored as. The defaults (docs/FORMAT.md has the measurements):
// - linear weights take the requested type: they are >99% of the bytes and tolerate block quantization
//   (`mixed`: q4 in the language model, q8 in the vision tower and the Q-Former). Quantized linear weights
//   are stored as panels (q8p, q4p: the same values, eight rows interleaved for the products);
// - token embeddings (also the output head when tied) never go below q8: they decide every logit (q8p
//   panels, so the head multiplies a decode step's sequences at panel speed);
// - norms, biases, position embeddings, the class embedding and query tokens stay f32: together they are
//   well under 1% of the bytes and their errors land directly in the residual stream;
// - the patch convolution stays f16 (f32 in an f32 file): its 588-wide input rows are not a whole number
//   of 32-wide blocks.
// A quantized type that cannot block a tensor (input width not a multiple of 32) falls back to f16.

public enum WeightPrecision: String, CaseIterable, Sendable {
    case f32, f16, q8, q4
    /// q4 linear weights in the language model, q8 in the vision tower and the Q-Former.
    ///
    /// Decoding streams every language-model weight once per token, so its speed is bytes read: q4
    /// halves them. The image side multiplies each weight by 257 (vision) or 32 (Q-Former) tokens and
    /// is bound by arithmetic, where q8's integer dot products cost the same as q4's and lose less.
    case mixed
    /// Super-block formats: 256-input blocks with integer sub-block scales (4.5, 3.44 and 6.56 bits per weight).
    case q4k, q3k, q6k
    /// q4k, with the Q-Former and the language projection in q6k: in the demo measurements they are where
    /// 4-bit error shows up in the tokens most (docs/FORMAT.md, "Default precision policy").
    case q4kMixed = "q4k-m"

    /// The type of a linear weight.
    public func linearType(for spec: WeightSpec) -> ElementType {
        switch self {
        case .f32: return .f32
        case .f16: return .f16
        case .q8: return .q8p
        case .q4: return .q4p
        case .mixed: return spec.component == .language ? .q4p : .q8p
        case .q4k: return .q4k
        case .q3k: return .q3k
        case .q6k: return .q6k
        case .q4kMixed: return Self.isSensitive(spec) ? .q6k : .q4k
        }
    }

    /// The matrices whose 4-bit error changes tokens most, measured (docs/DEMO.md): the Q-Former's and the
    /// language projection, through which the whole image reaches the language model as 32 query rows. On
    /// the demo benchmark, these in q6k took q4k's (with an importance matrix) disagreements with f32 from 62
    /// to 41 of 1,500 prompts; the vision tower, or any one kind of language-model matrix, in q6k moved them
    /// by 7 or fewer, either way.
    static func isSensitive(_ spec: WeightSpec) -> Bool {
        spec.component == .qformer || spec.name == "language_projection.weight"
    }

    /// Whether linear weights are stored in a floating point type (nothing to fit).
    var isFloat: Bool { self == .f32 || self == .f16 }
    /// "f32, f16, q8, q4, mixed, q4k, q3k, q6k or q4k-m".
    public static var names: String {
        let all = allCases.map(\.rawValue)
        return all.dropLast().joined(separator: ", ") + " or " + all.last!
    }
}

public struct PrecisionOverride: Sendable, Equatable, CustomStringConvertible {
    public let pattern: String
    public let type: ElementType

    /// Parses `GLOB=TYPE`, e.g. `*.fc2.weight=q8`.
    public init(parsing text: String) throws {
        guard let equals = text.lastIndex(of: "=") else {
            throw ConversionError("--override \(text): it must be GLOB=TYPE, e.g. 'language_model.*.fc2.weight=q8'")
        }
        pattern = String(text[..<equals])
        let typeName = String(text[text.index(after: equals)...])
        guard !pattern.isEmpty else { throw ConversionError("--override '\(text)': empty pattern") }
        guard let type = ElementType(name: typeName), type.isWritable else {
            let names = ElementType.allCases.filter(\.isWritable).map(\.name).joined(separator: ", ")
            throw ConversionError("--override \(text): it must end in a type: \(names)")
        }
        self.type = type
    }

    public func matches(_ name: String) -> Bool { fnmatch(pattern, name, 0) == 0 }
    public var description: String { "\(pattern)=\(type)" }
}

public struct PrecisionPolicy: Sendable {
    public var weights: WeightPrecision
    public var overrides: [PrecisionOverride]

    public init(weights: WeightPrecision, overrides: [PrecisionOverride] = []) {
        self.weights = weights
        self.overrides = overrides
    }

    public struct Choice: Equatable, Sendable {
        public let type: ElementType
        /// Why a tensor did not get what the role asked for, if it did not.
        public let note: String?
    }

    /// The type a weight is stored as. The last matching override wins.
    public func choose(for spec: WeightSpec) throws -> Choice {
        if let override = overrides.last(where: { $0.matches(spec.name) }) {
            guard override.type.canStore(shape: spec.shape) else {
                throw ConversionError("--override \(override): '\(spec.name)' has shape \(spec.shape); \(override.type) needs a matrix whose rows are a multiple of \(override.type.widthMultiple) wide")
            }
            return Choice(type: override.type, note: "override \(override)")
        }
        let wanted = defaultType(for: spec)
        if wanted.canStore(shape: spec.shape) { return Choice(type: wanted, note: nil) }
        return Choice(type: .f16, note: "\(wanted) needs rows a multiple of \(wanted.widthMultiple) wide; stored as f16")
    }

    public func defaultType(for spec: WeightSpec) -> ElementType {
        switch spec.role {
        case .linearWeight:
            return weights.linearType(for: spec)
        case .tokenEmbedding, .outputHead:
            // q8 in every quantized file (every logit is a dot product with these rows), as panels: the
            // head multiplies several sequences of a decode step at panel speed (q8 rows took 2x a token's
            // time for 3 or 4 tokens, q8p 1.1x), and looking a token up reads its row out of its panel.
            return weights.isFloat ? weights.linearType(for: spec) : .q8p
        case .patchEmbedding:
            return weights == .f32 ? .f32 : .f16
        case .bias, .normWeight, .normBias, .positionEmbedding, .classEmbedding, .queryTokens:
            return .f32
        }
    }

    /// Overrides that name no weight are almost always typos; say so instead of ignoring them.
    public func checkOverridesMatch(_ names: [String]) throws {
        for override in overrides where !names.contains(where: override.matches) {
            throw ConversionError("--override \(override): the pattern matches no tensor (names are Hugging Face keys, e.g. 'language_model.model.decoder.layers.*.fc1.weight')")
        }
    }
}
