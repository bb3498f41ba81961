import Blip2Configs
import Blip2ModelFile
import Blip2Tokenizer
import Foundation

// MARK: - BLIP-2 Flan-T5 checkpoints
//
// What differs from OPT when the checkpoint's language model is T5: whether the output head is `shared` is
// decided by what the checkpoint stores, the copies of `shared` that hub checkpoints keep are accounted for,
// and the tokenizer is T5's SentencePiece Unigram.

extension Checkpoint {
    /// transformers 5 always ties T5's lm_head to `shared` unless the checkpoint stores `lm_head.weight`
    /// (hub Flan-T5 checkpoints do, and say `tie_word_embeddings: false`; transformers 5 writes `true` with its
    /// own `scale_decoder_outputs`), and scales the decoder output unless the config turns it off. The model
    /// file's config states both outcomes explicitly, so the runtime needs no checkpoint to know them.
    static func resolvingT5Head(_ config: Blip2Config, json: Data, headStored: Bool, source: String) throws -> (Blip2Config, Data) {
        var config = config
        guard var t5 = config.t5Config,
              var object = try JSONSerialization.jsonObject(with: json) as? [String: Any],
              var text = object["text_config"] as? [String: Any] else {
            throw ConversionError("\(source): text_config is not a JSON object")
        }
        t5.tieWordEmbeddings = !headStored
        text["tie_word_embeddings"] = t5.tieWordEmbeddings
        text["scale_decoder_outputs"] = t5.scaleDecoderOutputs
        object["text_config"] = text
        config.t5Config = t5
        return (config, try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]))
    }
}

extension Converter {
    /// Checkpoint keys of a T5 language model that are not weights of the model file, and why.
    static func t5IgnoreReason(_ name: String) -> String? {
        switch name {
        case "language_model.encoder.embed_tokens.weight", "language_model.decoder.embed_tokens.weight":
            return "a copy of language_model.shared.weight (T5 ties both stacks' embeddings to it)"
        case "language_model.decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight":
            return "cross-attention takes no position bias (transformers ignores this key too)"
        default:
            return nil
        }
    }

    /// T5's tokenizer as the model file stores it: tokenizer.json verbatim with the special-token names, checked
    /// by building the tokenizer once.
    static func t5TokenizerSection(folder: URL, config: Blip2Config) throws -> MetadataSection {
        let data: T5TokenizerData
        let tokenizer: T5Tokenizer
        do {
            data = try T5TokenizerData.load(huggingFaceFolder: folder, imageTokenIndex: config.imageTokenIndex)
            tokenizer = try T5Tokenizer(data)
        } catch {
            throw ConversionError("\(folder.path): cannot read the T5 tokenizer: \(error)")
        }
        let largest = max(tokenizer.vocabularySize - 1, tokenizer.addedTokens.map(\.id).max() ?? 0)
        guard largest < config.languageVocabSize else {
            throw ConversionError("\(folder.path): the tokenizer has id \(largest), beyond the language model's \(config.languageVocabSize) embedding rows")
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return MetadataSection(name: MetadataSectionName.t5Tokenizer, json: Array(try encoder.encode(data)))
    }
}
