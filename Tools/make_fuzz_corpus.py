#!/usr/bin/env python3
"""Write the fuzz targets' seed corpus, Tests/Fuzz/corpus/TARGET/ (see Tools/fuzz.sh).

Seeds are small valid inputs the fuzzer mutates from: a tiny BLIP-2-OPT checkpoint (a few kilobytes of
weights, Hugging Face key names and shapes), model files converted from it by blip2-quantize, configs,
a tiny tokenizer, a few of the image fixtures, and an importance matrix `blip2 imatrix` gathers on the
tiny model. Needs only Python 3 and built blip2-quantize and blip2.

    swift build --product blip2-quantize && swift build --product blip2 && python3 Tools/make_fuzz_corpus.py
"""

import argparse
import json
import random
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "Tests" / "Fuzz" / "corpus"
IMAGES = ROOT / "Tests" / "Fixtures" / "images" / "inputs"
SEPARATOR = b"\n\x00FUZZ-NEXT-FILE\x00\n"  # FuzzInput.separator

# The smallest model with every kind of tensor: one layer each, widths of 8, a 8x8 image in 4x4 patches.
VISION = dict(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=8,
              patch_size=4, qkv_bias=True, hidden_act="gelu", layer_norm_eps=1e-6, model_type="blip_2_vision_model")
QFORMER = dict(hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2, cross_attention_frequency=2,
               encoder_hidden_size=8, hidden_act="gelu", layer_norm_eps=1e-12, model_type="blip_2_qformer")
TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "a", "p", "h", "o", "t", "Ġ", "Ġa", "ph", "ot", "Ġph", "Ġphot", "Ġphoto"]
MERGES = ["Ġ a", "p h", "o t", "Ġ ph", "Ġph ot", "Ġphot o"]
IMAGE_TOKEN = len(TOKENS)
TEXT = dict(vocab_size=32, hidden_size=8, ffn_dim=16, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
            word_embed_proj_dim=8, activation_function="relu", bos_token_id=2, eos_token_id=2, pad_token_id=1,
            do_layer_norm_before=True, enable_bias=True, tie_word_embeddings=True, model_type="opt")
QUERIES = 2


def config():
    return dict(model_type="blip-2", architectures=["Blip2ForConditionalGeneration"], num_query_tokens=QUERIES,
                image_token_index=IMAGE_TOKEN, use_decoder_only_language_model=True, dtype="float16",
                vision_config=VISION, qformer_config=QFORMER, text_config=TEXT)


def weights(legacy_bias):
    """(key, shape) of every tensor transformers' Blip2ForConditionalGeneration has for config()."""
    v, q, t = VISION, QFORMER, TEXT
    h, vi = v["hidden_size"], v["intermediate_size"]
    out = []
    def linear(prefix, o, i, bias=True):
        out.append((f"{prefix}.weight", [o, i]))
        if bias:
            out.append((f"{prefix}.bias", [o]))
    def norm(prefix, d):
        out.extend([(f"{prefix}.weight", [d]), (f"{prefix}.bias", [d])])
    grid = v["image_size"] // v["patch_size"]
    out += [("vision_model.embeddings.class_embedding", [1, 1, h]),
            ("vision_model.embeddings.patch_embedding.weight", [h, 3, v["patch_size"], v["patch_size"]]),
            ("vision_model.embeddings.patch_embedding.bias", [h]),
            ("vision_model.embeddings.position_embedding", [1, grid * grid + 1, h])]
    for i in range(v["num_hidden_layers"]):
        p = f"vision_model.encoder.layers.{i}"
        norm(f"{p}.layer_norm1", h)
        out.append((f"{p}.self_attn.qkv.weight", [3 * h, h]))
        if legacy_bias:
            out += [(f"{p}.self_attn.q_bias", [h]), (f"{p}.self_attn.v_bias", [h])]
        else:
            out.append((f"{p}.self_attn.qkv.bias", [3 * h]))
        linear(f"{p}.self_attn.projection", h, h)
        norm(f"{p}.layer_norm2", h)
        linear(f"{p}.mlp.fc1", vi, h)
        linear(f"{p}.mlp.fc2", h, vi)
    norm("vision_model.post_layernorm", h)
    qh = q["hidden_size"]
    out.append(("query_tokens", [1, QUERIES, qh]))
    norm("qformer.layernorm", qh)
    for i in range(q["num_hidden_layers"]):
        p = f"qformer.encoder.layer.{i}"
        for name in ("query", "key", "value"):
            linear(f"{p}.attention.attention.{name}", qh, qh)
        linear(f"{p}.attention.output.dense", qh, qh)
        norm(f"{p}.attention.output.LayerNorm", qh)
        if i % q["cross_attention_frequency"] == 0:
            linear(f"{p}.crossattention.attention.query", qh, qh)
            linear(f"{p}.crossattention.attention.key", qh, h)
            linear(f"{p}.crossattention.attention.value", qh, h)
            linear(f"{p}.crossattention.output.dense", qh, qh)
            norm(f"{p}.crossattention.output.LayerNorm", qh)
        linear(f"{p}.intermediate_query.dense", q["intermediate_size"], qh)
        linear(f"{p}.output_query.dense", qh, q["intermediate_size"])
        norm(f"{p}.output_query.LayerNorm", qh)
    th = t["hidden_size"]
    linear("language_projection", th, qh)
    d = "language_model.model.decoder"
    out += [(f"{d}.embed_tokens.weight", [t["vocab_size"], th]), (f"{d}.embed_positions.weight", [t["max_position_embeddings"] + 2, th])]
    for i in range(t["num_hidden_layers"]):
        p = f"{d}.layers.{i}"
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            linear(f"{p}.self_attn.{name}", th, th)
        norm(f"{p}.self_attn_layer_norm", th)
        linear(f"{p}.fc1", t["ffn_dim"], th)
        linear(f"{p}.fc2", th, t["ffn_dim"])
        norm(f"{p}.final_layer_norm", th)
    norm(f"{d}.final_layer_norm", th)
    return out


def safetensors(tensors, dtype, seed):
    """A safetensors file of small random values (F32, F16 or BF16), keys in the order given."""
    rng = random.Random(seed)
    header, data = {"__metadata__": {"format": "pt"}}, bytearray()
    for name, shape in tensors:
        count = 1
        for dim in shape:
            count *= dim
        values = [1.0 if name.endswith("norm1.weight") else rng.gauss(0, 0.1) for _ in range(count)]
        if dtype == "F32":
            raw = struct.pack(f"<{count}f", *values)
        elif dtype == "F16":
            raw = struct.pack(f"<{count}e", *values)
        else:
            raw = b"".join(struct.pack("<f", x)[2:] for x in values)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + bytes(data)


def tokenizer_files():
    vocab = json.dumps({token: i for i, token in enumerate(TOKENS)}).encode()
    merges = ("#version: 0.2\n" + "\n".join(MERGES) + "\n").encode()
    tokenizer_config = json.dumps(dict(tokenizer_class="GPT2Tokenizer", add_bos_token=True, bos_token="</s>", eos_token="</s>",
                                       pad_token="<pad>", unk_token="</s>")).encode()
    return vocab, merges, tokenizer_config


def preprocessor():
    size = VISION["image_size"]
    return json.dumps(dict(do_resize=True, size=dict(height=size, width=size), resample=3, do_rescale=True,
                           rescale_factor=1 / 255, do_normalize=True, image_mean=[0.48145466, 0.4578275, 0.40821073],
                           image_std=[0.26862954, 0.26130258, 0.27577711], do_convert_rgb=True)).encode()


def aspect_preprocessor():
    """A size that keeps the aspect ratio (refused: the model needs a square), so mutations reach those checks."""
    config = json.loads(preprocessor())
    config["size"] = dict(shortest_edge=VISION["image_size"], longest_edge=2 * VISION["image_size"])
    return json.dumps(config).encode()


def checkpoint_files(dtype, legacy_bias, seed):
    vocab, merges, tokenizer_config = tokenizer_files()
    return [json.dumps(config()).encode(), preprocessor(), safetensors(weights(legacy_bias), dtype, seed),
            vocab, merges, tokenizer_config]


def write(target, name, data):
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quantize", type=Path, default=ROOT / ".build" / "debug" / "blip2-quantize")
    parser.add_argument("--blip2", type=Path, default=ROOT / ".build" / "debug" / "blip2")
    args = parser.parse_args()
    shutil.rmtree(CORPUS, ignore_errors=True)

    checkpoints = {"tiny-f16": checkpoint_files("F16", False, 1), "tiny-bf16-legacy-bias": checkpoint_files("BF16", True, 2)}
    for name, files in checkpoints.items():
        write("checkpoint", name, SEPARATOR.join(files))
    write("config-json", "tiny-config.json", checkpoints["tiny-f16"][0])
    write("config-json", "preprocessor_config.json", checkpoints["tiny-f16"][1])
    write("config-json", "preprocessor_config-aspect.json", aspect_preprocessor())
    write("config-json", "fixture-config.json", (ROOT / "Tests/Fixtures/models/base-f32/checkpoint/config.json").read_bytes())
    # BLIP-2 Flan-T5: the T5 text_config fields (heads, d_kv, buckets, max distance, feed-forward, head and scaling).
    for t5 in ("gated-tied", "relu-untied"):
        write("config-json", f"t5-{t5}-config.json", (ROOT / f"Tests/Fixtures/models-t5/{t5}/checkpoint/config.json").read_bytes())
    write("tokenizer", "tiny", SEPARATOR.join(tokenizer_files()))
    fixture_tokenizer = ROOT / "Tests/Fixtures/models/tokenizer"
    write("tokenizer", "fixture", SEPARATOR.join((fixture_tokenizer / f).read_bytes() for f in ("vocab.json", "merges.txt", "tokenizer_config.json")))
    # The 500-piece T5 tokenizer with a hand-written charsmap (Tools/make_t5_tokenizer_cases.py); the full nmt_nfkc
    # one is too large for the fuzzer's input length.
    t5_tokenizer = ROOT / "Tests/Fixtures/tokenizer/t5/tiny"
    write("t5-tokenizer", "tiny", SEPARATOR.join((t5_tokenizer / f).read_bytes() for f in ("tokenizer.json", "tokenizer_config.json")))

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "checkpoint"
        folder.mkdir()
        names = ["config.json", "preprocessor_config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer_config.json"]
        for name, data in zip(names, checkpoints["tiny-f16"]):
            (folder / name).write_bytes(data)
        for weights_type, compress in (("f16", "none"), ("q8", "zstd"), ("f32", "none")):
            output = Path(scratch) / "m.blip2"
            subprocess.run([str(args.quantize), str(folder), "--output", str(output), "--weights", weights_type, "--compress", compress],
                           check=True, stdout=subprocess.DEVNULL)
            write("model-file", f"tiny-{weights_type}-{compress}.blip2", output.read_bytes())
        # An importance matrix of the f32 model (the last one written) over one fixture image.
        matrix = Path(scratch) / "m.imatrix"
        subprocess.run([str(args.blip2), "imatrix", str(output), str(ROOT / "Tests/Fixtures/models/images/circle.png"),
                        "--output", str(matrix), "--question", "What is it?", "--caption-tokens", "4", "--answer-tokens", "2"],
                       check=True)
        write("imatrix", "tiny-f32.imatrix", matrix.read_bytes())

    for name in ("jpeg_3x5.jpg", "jpeg_420_odd_45x31.jpg", "jpeg_gray_progressive_65x33.jpg", "jpeg_cmyk_progressive_50x70.jpg",
                 "jpeg_restart_markers_150x100.jpg", "jpeg_missing_eoi.jpg"):
        write("jpeg", name, (IMAGES / name).read_bytes())
    # Camera streams: JPEGs back to back with noise between them, a multipart HTTP response, a chunked one.
    jpegs = [(IMAGES / name).read_bytes() for name in ("jpeg_3x5.jpg", "jpeg_420_odd_45x31.jpg", "jpeg_restart_markers_150x100.jpg")]
    write("mjpeg", "back-to-back", jpegs[0] + jpegs[1] + b"\r\n--noise--\r\n" + jpegs[2] + jpegs[0][:40])
    multipart = b"".join(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(j) + j + b"\r\n" for j in jpegs)
    write("mjpeg", "multipart-http", b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n" + multipart)
    chunked = b"".join(b"%x\r\n" % len(multipart[i:i + 997]) + multipart[i:i + 997] + b"\r\n" for i in range(0, len(multipart), 997))
    write("mjpeg", "chunked-http", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
          b"Content-Type: multipart/x-mixed-replace;boundary=frame\r\n\r\n" + chunked + b"0\r\n\r\n")
    for path in sorted(IMAGES.glob("png_*.png")):
        if path.stat().st_size <= 4096:
            write("png", path.name, path.read_bytes())
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    print(f"wrote {sum(1 for p in CORPUS.rglob('*') if p.is_file())} seeds, {total} bytes, under {CORPUS.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
