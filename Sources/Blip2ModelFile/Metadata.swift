import Foundation

// MARK: - Metadata sections (docs/FORMAT.md, "Metadata")
//
// Each section is one JSON document. `config`, `preprocessor_config` and `generation_config` are the
// checkpoint's own files, verbatim; `tokenizer` and `quantization` are written by blip2-quantize.

public enum MetadataSectionName {
    public static let config = "config"
    public static let preprocessorConfig = "preprocessor_config"
    public static let generationConfig = "generation_config"
    public static let tokenizer = "tokenizer"
    /// A T5 model's tokenizer (`T5TokenizerData`), in place of `tokenizer`.
    public static let t5Tokenizer = "t5_tokenizer"
    public static let quantization = "quantization"
}

/// How a model file was made: what went in, what each tensor became, and what that cost in accuracy.
public struct QuantizationProvenance: Codable, Sendable, Equatable {
    public var tool: String
    public var toolVersion: String
    /// The dtypes the checkpoint stored its weights in, e.g. ["F16"].
    public var sourceDtypes: [String]
    /// The requested precision for linear weights (`--weights`).
    public var weights: String
    public var compression: String
    public var zstdLevel: Int?
    public var overrides: [String]
    /// The importance matrix the fits were weighted by (`--imatrix`), if any: its file name and the number of
    /// matrices it weighted.
    public var imatrix: ImportanceProvenance?
    public var tensors: [String: TensorProvenance]

    enum CodingKeys: String, CodingKey {
        case tool, toolVersion = "tool_version", sourceDtypes = "source_dtypes", weights, compression
        case zstdLevel = "zstd_level", overrides, imatrix, tensors
    }

    public init(tool: String, toolVersion: String, sourceDtypes: [String], weights: String, compression: String,
                zstdLevel: Int?, overrides: [String], imatrix: ImportanceProvenance? = nil, tensors: [String: TensorProvenance]) {
        self.tool = tool
        self.toolVersion = toolVersion
        self.sourceDtypes = sourceDtypes
        self.weights = weights
        self.compression = compression
        self.zstdLevel = zstdLevel
        self.overrides = overrides
        self.imatrix = imatrix
        self.tensors = tensors
    }
}

public struct ImportanceProvenance: Codable, Sendable, Equatable {
    /// The file's name (without its folder: model files travel).
    public var file: String
    /// Matrices whose fit it weighted.
    public var matrices: Int

    public init(file: String, matrices: Int) {
        self.file = file
        self.matrices = matrices
    }
}

public struct TensorProvenance: Codable, Sendable, Equatable {
    /// The checkpoint's dtype for this tensor ("F32", "F16", "BF16").
    public var sourceDtype: String
    /// Relative RMS error of the stored values against the source: ||w - q(w)|| / ||w||.
    public var error: Double
    /// `vision`, `qformer` or `language`.
    public var component: String
    /// The weight's role, which the precision policy decides by.
    public var role: String
    /// Why the type differs from what the role asked for (override, fallback), if it does.
    public var note: String?

    enum CodingKeys: String, CodingKey {
        case sourceDtype = "source_dtype", error, component, role, note
    }

    public init(sourceDtype: String, error: Double, component: String, role: String, note: String?) {
        self.sourceDtype = sourceDtype
        self.error = error
        self.component = component
        self.role = role
        self.note = note
    }
}
