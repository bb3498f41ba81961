#!/usr/bin/env python3
"""Build the small random-weight BLIP-2-OPT fixtures and their `transformers` reference outputs.

What it writes (default: Tests/Fixtures/models next to this script's package root):
  tokenizer/            a tiny GPT-2-style byte-level BPE with OPT's special-token layout
  images/               procedural test images (PNG and JPEG; RGB, grayscale, RGBA, palette, 16-bit)
  <model>/checkpoint/   a Hugging Face checkpoint folder (config.json, safetensors, processor files)
  <model>/tensors.json  safetensors key list: file, dtype, shape per tensor
  <model>/reference/    reference outputs of Blip2Processor + Blip2ForConditionalGeneration at float32
  index.json            one entry per model: what makes it different, sizes, margins

Every number comes from `transformers` itself: the checkpoint is reloaded with
`Blip2ForConditionalGeneration.from_pretrained(dir, dtype=torch.float32)` and
`Blip2Processor.from_pretrained(dir, backend="pil")` before any reference output is computed.
Tests/Fixtures/models/README.md documents every file and field.

The script is deterministic: seeded weights, seeded corpus, single-threaded torch. Re-running it
rewrites byte-identical files (use --check to verify against what is on disk).

Needs: python3 with torch, transformers (5.x), tokenizers, safetensors, numpy, pillow.

Examples:
  python3 Tools/make_fixtures.py                 # (re)build everything
  python3 Tools/make_fixtures.py --only base-f32 # one model (tokenizer and images are rebuilt too)
  python3 Tools/make_fixtures.py --check         # rebuild into a temp folder and compare checksums
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import io
import json
import math
import os
import random
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

# Quiet and deterministic before torch/transformers are imported.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import transformers  # noqa: E402
from transformers import (  # noqa: E402
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    LogitsProcessor,
    LogitsProcessorList,
)
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
# Documented in the fixture README (generate() with no length arguments); not news on every run.
warnings.filterwarnings("ignore", message="Using the model-agnostic default `max_length`")

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = PACKAGE_ROOT / "Tests" / "Fixtures" / "models"

# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------

# fairseq/RoBERTa order, as in OPT's vocab.json; `<mask>` is the last vocab entry there too.
LEADING_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
TRAILING_TOKEN = "<mask>"
IMAGE_TOKEN = "<image>"
# Entries in vocab.json (specials + 256 byte symbols + merges + <mask>); <image> gets this id.
TOKENIZER_VOCAB_SIZE = 512
NEWLINE_SYMBOL = "\u010a"  # GPT-2 byte-level symbol for "\n" ("Ċ")

COLORS = ["red", "green", "blue", "yellow", "orange", "purple", "black", "white", "gray", "pink", "brown"]
SHAPES = ["circle", "square", "triangle", "star", "line", "stripe", "dot", "ring"]
OBJECTS = [
    "cat", "dog", "car", "tree", "house", "person", "bird", "boat", "cup", "table", "chair", "bicycle",
    "beach", "mountain", "street", "pizza", "plate", "man", "woman", "child", "cartoon", "painting",
]
PLACES = ["on a table", "in the park", "on the beach", "next to a house", "in a kitchen", "on the street"]
NUMBER_WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
EXTRA_LINES = [
    "Hello, world!", "it's a photo.", "don't worry (really).", "\"quoted\" text; and more: yes...",
    "a-b c/d e_f 50% #1 $5 & @home", "3.14 1,000 12:30 2024 007", "line one\nline two\n\nline four\n",
    "caf\u00e9 na\u00efve \u00fcber r\u00e9sum\u00e9", "\u65e5\u672c\u8a9e \u4e2d\u6587", "smile \U0001F642 ok \u2014 done",
    "  two  spaces   and tabs\tend ", "UPPER lower MiXeD",
]


def training_corpus() -> list[str]:
    """English-ish captions, questions and answers: enough pairs for ~250 merges."""
    rng = random.Random(20240501)
    lines: list[str] = []
    for _ in range(600):
        color, color2 = rng.choice(COLORS), rng.choice(COLORS)
        shape, obj = rng.choice(SHAPES), rng.choice(OBJECTS)
        count = rng.randint(0, 120)
        template = rng.randrange(9)
        if template == 0:
            lines.append(f"a photo of a {color} {shape}")
        elif template == 1:
            lines.append(f"a {color} {obj} {rng.choice(PLACES)} with a {color2} background\n")
        elif template == 2:
            lines.append(f"Question: what color is the {shape}? Answer: {color}")
        elif template == 3:
            lines.append(f"Question: how many {shape}s are there? Answer: {rng.choice(NUMBER_WORDS)}")
        elif template == 4:
            lines.append(f"Question: what is in the picture? Answer: a {obj}.")
        elif template == 5:
            lines.append(f"this is a cartoon of a {obj}")
        elif template == 6:
            lines.append(f"there are {count} {obj}s in the image.\n")
        elif template == 7:
            lines.append(f"Question: is the {obj} {color}? Answer: no, it is {color2}. Question: why? Answer:")
        else:
            lines.append(f"{rng.choice(NUMBER_WORDS).capitalize()} {color} {shape}s, {count} {obj}s!")
    lines.extend(EXTRA_LINES * 3)
    return lines


def train_tokenizer() -> tuple[dict[str, int], list[tuple[str, str]]]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_SIZE - 1,  # the last slot is <mask>
        min_frequency=2,
        special_tokens=LEADING_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_corpus(), trainer)
    model = json.loads(tokenizer.to_str())["model"]
    vocab: dict[str, int] = dict(sorted(model["vocab"].items(), key=lambda item: item[1]))
    if len(vocab) != TOKENIZER_VOCAB_SIZE - 1:
        raise RuntimeError(f"trained vocab has {len(vocab)} entries, wanted {TOKENIZER_VOCAB_SIZE - 1}")
    vocab[TRAILING_TOKEN] = len(vocab)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    for index, token in enumerate(LEADING_SPECIALS):
        assert vocab[token] == index
    assert NEWLINE_SYMBOL in vocab
    return vocab, merges


def tokenizer_config(image_token_id: int) -> dict:
    """OPT's tokenizer_config.json plus BLIP-2's `<image>` added special token."""

    def added(content: str, normalized: bool) -> dict:
        return {
            "content": content, "lstrip": False, "normalized": normalized, "rstrip": False,
            "single_word": False, "special": True,
        }

    return {
        "add_bos_token": True,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            "1": added("<pad>", True),
            "2": added("</s>", True),
            str(image_token_id): added(IMAGE_TOKEN, False),
        },
        "bos_token": "</s>",
        "eos_token": "</s>",
        "errors": "replace",
        "pad_token": "<pad>",
        "processor_class": "Blip2Processor",
        "tokenizer_class": "GPT2Tokenizer",
        "unk_token": "</s>",
    }


def special_tokens_map() -> dict:
    def token(content: str, normalized: bool) -> dict:
        return {"content": content, "lstrip": False, "normalized": normalized, "rstrip": False, "single_word": False}

    return {
        "bos_token": token("</s>", True),
        "eos_token": token("</s>", True),
        "pad_token": token("<pad>", True),
        "unk_token": token("</s>", True),
    }


def write_tokenizer(folder: Path, vocab: dict[str, int], merges: list[tuple[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    write_text(folder / "merges.txt", "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    write_json(folder / "tokenizer_config.json", tokenizer_config(len(vocab)))
    write_json(folder / "special_tokens_map.json", special_tokens_map())


TOKENIZER_CASES = [
    "a photo of",
    "Question: what color is the circle? Answer:",
    "a photo of a red circle\n",
    " leading space",
    "  runs   of    spaces  ",
    "line one\nline two\n\nend",
    "3.14 1,000 12:30 2024 1234567",
    "caf\u00e9 na\u00efve \u00fcber",
    "\u65e5\u672c\u8a9e \U0001F642 \u2014",
    "zebra xylophone quokka",  # words the corpus never saw
    "<image> and </s> and <pad> typed as text",
    "<s> <unk> <mask> typed as text",
    "it's don't we'll I'm",
    "",
]


def tokenizer_reference(folder: Path) -> dict:
    """Encode/decode cases from the transformers tokenizer built from the files in `folder`."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    cases = []
    for text in TOKENIZER_CASES:
        ids = tokenizer(text)["input_ids"]
        ids_plain = tokenizer(text, add_special_tokens=False)["input_ids"]
        cases.append({
            "text": text,
            "ids": ids,
            "ids_without_special_tokens": ids_plain,
            "tokens": tokenizer.convert_ids_to_tokens(ids),
            "decoded": tokenizer.decode(ids),
            "decoded_skip_special": tokenizer.decode(ids, skip_special_tokens=True),
        })
    # Ids a random model may generate: every id that is special, non-special-but-reserved,
    # a lone UTF-8 continuation byte, or beyond the tokenizer (a padded LM row).
    vocab = tokenizer.get_vocab()
    lone_byte = vocab.get("\u0142")  # byte 0x80 in GPT-2's byte-to-unicode table
    decode_cases = [
        [0, 1, 2, 3],
        [TOKENIZER_VOCAB_SIZE - 1, TOKENIZER_VOCAB_SIZE],
        [vocab["a"], TOKENIZER_VOCAB_SIZE + 5, vocab[NEWLINE_SYMBOL], TOKENIZER_VOCAB_SIZE + 40],
        [lone_byte, vocab["a"], lone_byte, lone_byte],
    ]
    decodes = [
        {
            "ids": ids,
            "decoded": tokenizer.decode(ids),
            "decoded_skip_special": tokenizer.decode(ids, skip_special_tokens=True),
        }
        for ids in decode_cases
    ]
    return {
        "transformers_version": transformers.__version__,
        "tokenizer_class": type(tokenizer).__name__,
        "len_tokenizer": len(tokenizer),
        "vocab_json_entries": TOKENIZER_VOCAB_SIZE,
        "special_ids": {
            "bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id,
            "unk": tokenizer.unk_token_id, "image": tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
            "newline": vocab[NEWLINE_SYMBOL],
        },
        "all_special_ids": sorted(tokenizer.all_special_ids),
        "encode": cases,
        "decode": decodes,
    }


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------

def make_images() -> dict[str, bytes]:
    """Small procedural images; odd sizes so resizing both shrinks and enlarges."""
    images: dict[str, bytes] = {}

    def encode(image: Image.Image, fmt: str, **options) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        return buffer.getvalue()

    # Reference image: red circle on a two-way gradient, RGB PNG.
    width, height = 61, 47
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // (width - 1), y * 255 // (height - 1), 255 - x * 200 // (width - 1)], axis=-1)
    image = Image.fromarray(rgb.astype(np.uint8), "RGB")
    ImageDraw.Draw(image).ellipse((14, 8, 46, 40), fill=(220, 20, 30), outline=(255, 255, 255))
    images["circle.png"] = encode(image, "PNG")

    # Diagonal stripes with a blue square, RGB JPEG (4:2:0).
    width, height = 97, 33
    y, x = np.mgrid[0:height, 0:width]
    stripes = ((x + y) // 6) % 2
    rgb = np.where(stripes[..., None] == 1, [250, 210, 40], [30, 120, 60]).astype(np.uint8)
    image = Image.fromarray(rgb, "RGB")
    ImageDraw.Draw(image).rectangle((60, 5, 85, 27), fill=(20, 40, 200))
    images["stripes.jpg"] = encode(image, "JPEG", quality=87, subsampling=2)

    # Grayscale JPEG smaller than every model's input size (upscaling path).
    width, height = 23, 29
    y, x = np.mgrid[0:height, 0:width]
    gray = (128 + 100 * np.sin(x / 3.0) * np.cos(y / 4.0)).astype(np.uint8)
    images["gray.jpg"] = encode(Image.fromarray(gray, "L"), "JPEG", quality=90)

    # RGBA PNG: alpha ramps from transparent to opaque, composited onto white by the processor.
    width, height = 50, 38
    y, x = np.mgrid[0:height, 0:width]
    rgba = np.stack([
        np.full_like(x, 40), 80 + y * 4, 255 - x * 4, x * 255 // (width - 1)
    ], axis=-1).astype(np.uint8)
    image = Image.fromarray(rgba, "RGBA")
    ImageDraw.Draw(image).polygon([(25, 3), (46, 34), (4, 34)], fill=(250, 250, 0, 200))
    images["rgba.png"] = encode(image, "PNG")

    # Palette PNG with a transparent palette entry (tRNS).
    width, height = 33, 35
    image = Image.new("P", (width, height), 0)
    palette = [255, 255, 255, 200, 30, 30, 30, 160, 60, 40, 40, 220] + [0] * (256 * 3 - 12)
    image.putpalette(palette)
    draw = ImageDraw.Draw(image)
    draw.rectangle((3, 3, 29, 14), fill=1)
    draw.ellipse((6, 12, 26, 32), fill=2)
    draw.line((0, 34, 32, 0), fill=3, width=3)
    images["palette.png"] = encode(image, "PNG", transparency=0)

    # 16-bit grayscale PNG: PIL opens it as mode "I;16" and clips to 255 when converting to RGB.
    width, height = 31, 27
    y, x = np.mgrid[0:height, 0:width]
    gray16 = (x * 9 + y * 3).astype(np.uint16)
    image = Image.fromarray(gray16)
    images["gray16.png"] = encode(image, "PNG")
    return images


REFERENCE_IMAGE = "circle.png"

# ---------------------------------------------------------------------------------------------
# Model specifications
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Tower:
    hidden: int
    heads: int
    layers: int
    intermediate: int


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    summary: str
    seed: int
    vision: Tower
    qformer: Tower
    text: Tower
    image_size: int
    num_query_tokens: int
    cross_attention_frequency: int
    qkv_bias: bool = True
    vision_layer_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    lm_vocab_size: int = 576  # tokenizer (512) + <image>, rounded up to a multiple of 64
    eos_is_newline: bool = True
    storage: str = "float32"  # float32 | float16 (mixed: Q-Former kept f32) | bfloat16
    shards: int = 1
    legacy_config: bool = False  # 4.x-era config.json (torch_dtype, old keys), no generation_config.json
    store_tied_lm_head: bool = False  # write lm_head.weight although it is tied (older hub checkpoints do)
    padded_id_boost: float = 0.0  # pushes an id beyond the tokenizer up so generation emits it


SPECS: list[Spec] = [
    Spec(
        name="base-f32",
        summary="baseline: f32 single file, tied LM head, qkv bias, Q-Former cross-attention every 2nd layer",
        seed=101,
        vision=Tower(hidden=32, heads=2, layers=2, intermediate=64),
        qformer=Tower(hidden=64, heads=4, layers=2, intermediate=128),
        text=Tower(hidden=64, heads=4, layers=2, intermediate=128),
        image_size=28, num_query_tokens=8, cross_attention_frequency=2,
    ),
    Spec(
        name="sharded-untied-f32",
        summary="f32 in 3 shards + index, separate lm_head.weight, 32 query tokens, cross-attention every layer",
        seed=202,
        vision=Tower(hidden=64, heads=4, layers=2, intermediate=128),
        qformer=Tower(hidden=32, heads=2, layers=3, intermediate=64),
        text=Tower(hidden=32, heads=8, layers=2, intermediate=96),
        image_size=56, num_query_tokens=32, cross_attention_frequency=1,
        tie_word_embeddings=False, shards=3,
    ),
    Spec(
        name="f16-noqkvbias-eos2",
        summary="f16 storage with Q-Former and query tokens kept f32 (mixed dtypes), no qkv bias, "
                "eos_token_id 2 (= BOS), untied LM head",
        seed=303,
        vision=Tower(hidden=64, heads=8, layers=1, intermediate=96),
        qformer=Tower(hidden=64, heads=8, layers=1, intermediate=96),
        text=Tower(hidden=32, heads=2, layers=3, intermediate=128),
        image_size=42, num_query_tokens=4, cross_attention_frequency=1,
        qkv_bias=False, eos_is_newline=False, storage="float16", tie_word_embeddings=False,
    ),
    Spec(
        name="bf16-sharded-untied",
        summary="bf16 storage (every tensor) in 2 shards, untied LM head, vocab padded to 520, vision LN eps 1e-5",
        seed=404,
        vision=Tower(hidden=32, heads=4, layers=2, intermediate=96),
        qformer=Tower(hidden=32, heads=4, layers=2, intermediate=64),
        text=Tower(hidden=64, heads=4, layers=2, intermediate=96),
        image_size=28, num_query_tokens=16, cross_attention_frequency=2,
        vision_layer_norm_eps=1e-5, tie_word_embeddings=False, lm_vocab_size=520,
        storage="bfloat16", shards=2, padded_id_boost=2.0,
    ),
    Spec(
        name="odd-hidden-f32",
        summary="hidden sizes not multiples of 32 (vision 40, Q-Former 48, OPT 40, FFN 72..100): converter fallback",
        seed=505,
        vision=Tower(hidden=40, heads=4, layers=2, intermediate=100),
        qformer=Tower(hidden=48, heads=4, layers=2, intermediate=72),
        text=Tower(hidden=40, heads=5, layers=2, intermediate=88),
        image_size=42, num_query_tokens=8, cross_attention_frequency=2,
    ),
    Spec(
        name="legacy-4x-f32",
        summary="4.x-era config.json (torch_dtype, no qkv_bias key, old serialisation keys), tied but "
                "lm_head.weight stored anyway, 2 shards, no generation_config.json",
        seed=606,
        vision=Tower(hidden=32, heads=2, layers=1, intermediate=64),
        qformer=Tower(hidden=32, heads=2, layers=2, intermediate=64),
        text=Tower(hidden=32, heads=2, layers=2, intermediate=64),
        image_size=28, num_query_tokens=8, cross_attention_frequency=2,
        shards=2, legacy_config=True, store_tied_lm_head=True,
    ),
    Spec(
        name="deep-f16-tied",
        summary="f16 storage, 3-layer towers everywhere, tied LM head, one Q-Former attention head",
        seed=707,
        vision=Tower(hidden=32, heads=2, layers=3, intermediate=64),
        qformer=Tower(hidden=32, heads=1, layers=3, intermediate=96),
        text=Tower(hidden=64, heads=4, layers=3, intermediate=128),
        image_size=56, num_query_tokens=4, cross_attention_frequency=2,
        storage="float16",
    ),
]

# ---------------------------------------------------------------------------------------------
# Model construction
# ---------------------------------------------------------------------------------------------


def build_config(spec: Spec, newline_id: int, image_token_id: int) -> Blip2Config:
    vision = dict(
        hidden_size=spec.vision.hidden, intermediate_size=spec.vision.intermediate,
        num_hidden_layers=spec.vision.layers, num_attention_heads=spec.vision.heads,
        image_size=spec.image_size, patch_size=14, qkv_bias=spec.qkv_bias,
        layer_norm_eps=spec.vision_layer_norm_eps,
    )
    qformer = dict(
        hidden_size=spec.qformer.hidden, intermediate_size=spec.qformer.intermediate,
        num_hidden_layers=spec.qformer.layers, num_attention_heads=spec.qformer.heads,
        cross_attention_frequency=spec.cross_attention_frequency, encoder_hidden_size=spec.vision.hidden,
    )
    text = dict(
        model_type="opt", vocab_size=spec.lm_vocab_size, hidden_size=spec.text.hidden,
        word_embed_proj_dim=spec.text.hidden, ffn_dim=spec.text.intermediate,
        num_hidden_layers=spec.text.layers, num_attention_heads=spec.text.heads,
        max_position_embeddings=128, bos_token_id=2, pad_token_id=1,
        eos_token_id=newline_id if spec.eos_is_newline else 2,
        tie_word_embeddings=spec.tie_word_embeddings,
    )
    return Blip2Config(
        vision_config=vision, qformer_config=qformer, text_config=text,
        num_query_tokens=spec.num_query_tokens, image_token_index=image_token_id,
    )


# Attention logits: query and key matrices scaled up so attention picks positions instead of
# averaging them all (keeps the image visible to the text positions).
QK_GAIN = 1.5
# OPT residual branches (attention out_proj, fc2) scaled up so the residual stream is not dominated
# by the input token's own embedding; with tied embeddings that would make every greedy step
# repeat the previous token.
TEXT_RESIDUAL_GAIN = 2.5
EMBEDDING_STD = 0.5


def matrix_gain(name: str) -> float:
    if name.endswith(("q_proj.weight", "k_proj.weight", "query.weight", "key.weight")):
        return QK_GAIN
    if name.startswith("language_model.") and name.endswith(("out_proj.weight", "fc2.weight")):
        return TEXT_RESIDUAL_GAIN
    return 1.0


def reinitialise(model: Blip2ForConditionalGeneration, spec: Spec, generator: torch.Generator) -> torch.Tensor:
    """Replace the (near-zero) default init with seeded noise that keeps every activation alive.

    Matrices: N(0, 1/sqrt(fan_in)) so each layer roughly preserves scale; LayerNorm weights
    1 + N(0, 0.1), biases N(0, 0.05); the vision qkv bias keeps a zero key third as BLIP-2's does.
    OPT embeddings N(0, 0.5): with a unit-variance final LayerNorm output this gives logits with a
    standard deviation of ~0.5*sqrt(hidden) (4 at hidden 64), so greedy steps are rarely near-ties.
    """

    def normal(shape, std: float, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float32) * std + mean

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            shape = tuple(parameter.shape)
            if name.endswith("embed_tokens.weight") or name.endswith("lm_head.weight"):
                value = normal(shape, EMBEDDING_STD)
            elif name.endswith("embed_positions.weight"):
                value = normal(shape, 0.2)
            elif name.endswith("position_embedding") or name.endswith("class_embedding"):
                value = normal(shape, 0.3)
            elif name == "query_tokens":
                value = normal(shape, 0.5)
            elif "layer_norm" in name.lower() or "layernorm" in name.lower():
                value = normal(shape, 0.1, 1.0) if name.endswith("weight") else normal(shape, 0.05)
            elif name.endswith("qkv.bias"):
                value = normal(shape, 0.05)
                third = shape[0] // 3
                value[third:2 * third] = 0.0
            elif name.endswith("bias"):
                value = normal(shape, 0.05)
            elif parameter.dim() >= 2:
                fan_in = int(np.prod(shape[1:]))
                value = normal(shape, matrix_gain(name) / math.sqrt(fan_in))
                if name.endswith("qkv.weight"):
                    value[: 2 * shape[0] // 3] *= QK_GAIN
            else:
                raise RuntimeError(f"no init rule for {name} {shape}")
            parameter.copy_(value)

        # Chosen ids get pushed up through a shared direction: the final LayerNorm bias gets a
        # component along a seeded unit vector `d`, and adding b*d/2 to an output row raises that
        # logit by about b (plus noise of std ~b/2). EOS is calibrated later; an id the tokenizer
        # cannot decode may get a fixed push here.
        decoder = model.language_model.model.decoder
        direction = normal((spec.text.hidden,), 1.0)
        direction /= direction.norm()
        decoder.final_layer_norm.bias += 2.0 * direction
        if spec.padded_id_boost:
            output_matrix = model.language_model.get_output_embeddings().weight
            output_matrix[spec.lm_vocab_size - 3] += direction * spec.padded_id_boost / 2.0
        return direction


# Share of greedy test runs (every image x task) that should end with EOS before max_new_tokens.
EOS_TARGET_SHARE = 0.5


def calibration_inputs(spec: Spec, tokenizer_folder: Path, image_files: dict[str, Path]) -> list[tuple]:
    """(pixel_values, input_ids, max_new_tokens) for every test image and task, as the processor makes them."""
    from transformers import AutoTokenizer
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder))
    image_processor = BlipImageProcessorPil.from_dict(preprocessor_config(spec.image_size))
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    runs = []
    for name in sorted(image_files):
        pixels = image_processor(Image.open(image_files[name]), return_tensors="pt")["pixel_values"]
        for _, prompt, max_new_tokens in TASKS:
            text_ids = tokenizer(prompt)["input_ids"] if prompt is not None else [tokenizer.bos_token_id]
            input_ids = torch.tensor([[image_token_id] * spec.num_query_tokens + text_ids])
            runs.append((pixels, input_ids, max_new_tokens))
    return runs


def calibrate_eos_boost(model, eos_id: int, direction: torch.Tensor, runs: list[tuple]) -> tuple[float, dict]:
    """Choose the EOS boost so that about half of the greedy test runs end early with EOS.

    Boosting one output row only changes that logit, so the greedy path up to the first EOS is
    the same for every boost: one unboosted run per input gives, for each step, the boost above
    which EOS would win there (gap to the best other token / logit gain per unit boost). EOS is
    never part of a prompt and, when tied, its embedding is never fed back, so this is exact for
    f32 storage (and close for f16/bf16).
    """
    final_states: list[torch.Tensor] = []
    hook = model.language_model.model.decoder.final_layer_norm.register_forward_hook(
        lambda module, args, output: final_states.append(output[0, -1].detach().clone()))
    per_run: list[list[float]] = []
    try:
        for pixels, input_ids, max_new_tokens in runs:
            final_states.clear()
            with torch.no_grad():
                output = model.generate(pixel_values=pixels, input_ids=input_ids, do_sample=False,
                                        max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                                        return_dict_in_generate=True, output_logits=True)
            needed = []
            for logits, state in zip(output.logits, final_states):
                logits = logits[0].clone()
                eos_logit = float(logits[eos_id])
                logits[eos_id] = -math.inf
                gain = float(state @ direction) / 2.0
                needed.append((float(logits.max()) - eos_logit) / gain if gain > 0 else math.inf)
            per_run.append(needed)
    finally:
        hook.remove()

    def end_steps(boost: float) -> list:
        return [next((step + 1 for step, need in enumerate(run) if need < boost), None) for run in per_run]

    values = sorted({v for run in per_run for v in run if math.isfinite(v) and v > 0})
    candidates = [0.0] + [(a + b) / 2 for a, b in zip(values, values[1:])]
    best = None
    for boost in candidates:
        ends = end_steps(boost)
        early = sum(e is not None for e in ends) / len(ends)
        first = sum(e == 1 for e in ends) / len(ends)
        score = abs(early - EOS_TARGET_SHARE) + 2 * max(0.0, first - 0.1)
        if best is None or score < best[0] - 1e-12:
            best = (score, boost, early, first)
    _, boost, early, first = best
    return boost, {"runs": len(per_run), "share_ending_early": early, "share_ending_at_step_1": first}


LEGACY_VISION_EXTRAS = {
    "dropout": 0.0, "initializer_factor": 1.0, "num_channels": 3, "projection_dim": 512,
}
LEGACY_COMMON_EXTRAS = {
    # Keys every sub-config carried when serialised by transformers 4.2x.
    "add_cross_attention": False, "architectures": None, "bad_words_ids": None, "begin_suppress_tokens": None,
    "chunk_size_feed_forward": 0, "cross_attention_hidden_size": None, "decoder_start_token_id": None,
    "diversity_penalty": 0.0, "do_sample": False, "early_stopping": False, "encoder_no_repeat_ngram_size": 0,
    "exponential_decay_length_penalty": None, "finetuning_task": None, "forced_bos_token_id": None,
    "forced_eos_token_id": None, "id2label": {"0": "LABEL_0", "1": "LABEL_1"}, "is_decoder": False,
    "is_encoder_decoder": False, "label2id": {"LABEL_0": 0, "LABEL_1": 1}, "length_penalty": 1.0,
    "max_length": 20, "min_length": 0, "no_repeat_ngram_size": 0, "num_beam_groups": 1, "num_beams": 1,
    "num_return_sequences": 1, "output_attentions": False, "output_hidden_states": False,
    "output_scores": False, "prefix": None, "problem_type": None, "pruned_heads": {},
    "remove_invalid_values": False, "repetition_penalty": 1.0, "return_dict": True,
    "return_dict_in_generate": False, "sep_token_id": None, "suppress_tokens": None, "task_specific_params": None,
    "temperature": 1.0, "tf_legacy_loss": False, "tie_encoder_decoder": False, "tie_word_embeddings": True,
    "tokenizer_class": None, "top_k": 50, "top_p": 1.0, "torch_dtype": None, "torchscript": False,
    "transformers_version": "4.27.0.dev0", "typical_p": 1.0, "use_bfloat16": False,
}


def legacy_config_json(config: dict) -> dict:
    """Rewrite a 5.x config.json the way transformers 4.27-4.4x wrote BLIP-2-OPT configs."""
    legacy = copy.deepcopy(config)
    legacy.pop("dtype", None)
    legacy["torch_dtype"] = "float32"
    legacy["transformers_version"] = "4.47.0.dev0"
    for key in ("vision_config", "qformer_config", "text_config"):
        sub = legacy[key]
        extras = dict(LEGACY_COMMON_EXTRAS)
        if key == "text_config":
            extras.update({
                "_name_or_path": "facebook/opt-tiny", "architectures": ["OPTForCausalLM"], "prefix": "</s>",
                "torch_dtype": "float16", "tie_word_embeddings": sub["tie_word_embeddings"],
            })
            # Keys OPT configs of that era never wrote: the defaults apply.
            for missing in ("_remove_final_layer_norm", "use_cache"):
                sub.pop(missing, None)
            sub.update({k: v for k, v in extras.items() if k not in sub or k == "tie_word_embeddings"})
            sub["bos_token_id"], sub["pad_token_id"] = 2, 1
        elif key == "vision_config":
            sub.pop("qkv_bias")  # added in a later 4.x; its default (true) applies
            sub.update({k: v for k, v in {**extras, **LEGACY_VISION_EXTRAS}.items() if k not in sub})
        else:
            sub.pop("use_qformer_text_input")  # added in a later 4.x
            extras.update({"classifier_dropout": None, "position_embedding_type": "absolute"})
            sub.update({k: v for k, v in extras.items() if k not in sub})
        legacy[key] = dict(sorted(sub.items()))
    return dict(sorted(legacy.items()))


def preprocessor_config(image_size: int) -> dict:
    """As published for Salesforce/blip2-opt-2.7b, with the size scaled down."""
    return {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "BlipImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "processor_class": "Blip2Processor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"height": image_size, "width": image_size},
    }


def safetensors_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def kept_in_float32(name: str) -> bool:
    """Blip2ForConditionalGeneration._keep_in_fp32_modules: these stay f32 in an f16 checkpoint."""
    return name == "query_tokens" or name.startswith("qformer.")


def round_to_storage(model: Blip2ForConditionalGeneration, spec: Spec) -> None:
    """Round every f32 weight through the storage dtype, so the f32 model equals the saved one."""
    dtype = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}[spec.storage]
    if dtype is None:
        return
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if spec.storage == "float16" and kept_in_float32(name):
                continue
            parameter.copy_(parameter.to(dtype).to(torch.float32))


def save_checkpoint(spec: Spec, seed: int, folder: Path, tokenizer_folder: Path, vocab: dict[str, int],
                    image_files: dict[str, Path]) -> dict:
    """Writes the checkpoint folder; returns how EOS was calibrated."""
    newline_id = vocab[NEWLINE_SYMBOL]
    image_token_id = len(vocab)
    config = build_config(spec, newline_id, image_token_id)
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config).eval()
    generator = torch.Generator().manual_seed(seed)
    direction = reinitialise(model, spec, generator)
    # Calibrate on the values the checkpoint will really hold (f16/bf16 rounding moves logits).
    round_to_storage(model, spec)
    eos_id = config.text_config.eos_token_id
    boost, calibration = calibrate_eos_boost(model, eos_id, direction,
                                             calibration_inputs(spec, tokenizer_folder, image_files))
    with torch.no_grad():
        model.language_model.get_output_embeddings().weight[eos_id] += direction * boost / 2.0
    round_to_storage(model, spec)
    calibration = {"eos_logit_boost": boost, **calibration}

    if folder.exists():
        shutil.rmtree(folder)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if spec.storage == "float32":
            final = model
        elif spec.storage == "bfloat16":
            final = model.to(torch.bfloat16)
        elif spec.storage == "float16":
            # What a user gets from from_pretrained(dtype=float16): Q-Former and query tokens stay f32.
            model.save_pretrained(scratch / "f32")
            final = Blip2ForConditionalGeneration.from_pretrained(scratch / "f32", dtype=torch.float16)
        else:
            raise ValueError(spec.storage)
        total = sum(p.numel() * p.element_size() for p in final.state_dict().values())
        if spec.shards > 1:
            final.save_pretrained(folder, max_shard_size=int(math.ceil(total / spec.shards * 1.15)))
        else:
            final.save_pretrained(folder, max_shard_size=10**9)

    if spec.store_tied_lm_head:
        add_tied_lm_head(folder)
    config_path = folder / "config.json"
    if spec.legacy_config:
        write_json(config_path, legacy_config_json(json.loads(config_path.read_text())))
        (folder / "generation_config.json").unlink()
    write_json(folder / "preprocessor_config.json", preprocessor_config(spec.image_size))
    write_json(folder / "processor_config.json", {
        "num_query_tokens": spec.num_query_tokens, "processor_class": "Blip2Processor",
    })
    for item in sorted(tokenizer_folder.iterdir()):
        if item.name != "reference.json":
            shutil.copyfile(item, folder / item.name)
    return calibration


def add_tied_lm_head(folder: Path) -> None:
    """Older hub checkpoints store language_model.lm_head.weight although it equals embed_tokens."""
    index_path = folder / "model.safetensors.index.json"
    embed_key = "language_model.model.decoder.embed_tokens.weight"
    head_key = "language_model.lm_head.weight"
    if index_path.exists():
        index = json.loads(index_path.read_text())
        target = index["weight_map"][embed_key]
    else:
        index, target = None, "model.safetensors"
    path = folder / target
    with safe_open(str(path), "pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        metadata = handle.metadata()
    tensors[head_key] = tensors[embed_key].clone()
    save_file(dict(sorted(tensors.items())), str(path), metadata=metadata)
    if index is not None:
        index["weight_map"][head_key] = target
        index["weight_map"] = dict(sorted(index["weight_map"].items()))
        tensor = tensors[head_key]
        index["metadata"]["total_size"] += tensor.numel() * tensor.element_size()
        if "total_parameters" in index["metadata"]:
            index["metadata"]["total_parameters"] += tensor.numel()
        write_json(index_path, index)


def tensor_manifest(folder: Path) -> dict:
    files = sorted(p.name for p in folder.glob("*.safetensors"))
    tensors = []
    for file in files:
        with safe_open(str(folder / file), "pt") as handle:
            for key in sorted(handle.keys()):
                info = handle.get_slice(key)
                tensors.append({"name": key, "file": file, "dtype": info.get_dtype(), "shape": list(info.get_shape())})
    return {
        "files": files,
        "index_file": "model.safetensors.index.json" if (folder / "model.safetensors.index.json").exists() else None,
        "tensor_count": len(tensors),
        "parameter_count": sum(int(np.prod(t["shape"])) for t in tensors),
        "tensors": tensors,
    }


# ---------------------------------------------------------------------------------------------
# Reference outputs
# ---------------------------------------------------------------------------------------------

PROMPTED = "a photo of"
VQA = "Question: what color is the circle? Answer:"
CHAT_TURNS = [("what is in the picture?", "a red circle")]
CHAT_QUESTION = "what color is the background?"


def chat_prompt(turns: list[tuple[str, str]], question: str) -> str:
    """DESIGN §1: previous turns `Question: q Answer: a.` joined by spaces, then the new question."""
    history = " ".join(f"Question: {q} Answer: {a}." for q, a in turns)
    current = f"Question: {question} Answer:"
    return f"{history} {current}" if history else current


TASKS = [
    ("caption", None, 20),
    ("prompted", PROMPTED, 20),
    ("vqa", VQA, 10),
    ("chat", chat_prompt(CHAT_TURNS, CHAT_QUESTION), 10),
]


class PerturbScores(LogitsProcessor):
    """Adds tiny seeded noise to the scores: a decoding that flips under it is too close to call."""

    def __init__(self, seed: int, magnitude: float):
        self.generator = torch.Generator().manual_seed(seed)
        self.magnitude = magnitude

    def __call__(self, input_ids, scores):
        noise = (torch.rand(scores.shape, generator=self.generator) * 2 - 1) * self.magnitude
        return scores + noise.to(scores.dtype)


def generation_cases(task: str, max_new_tokens: int) -> list[tuple[str, dict]]:
    base = {"do_sample": False, "max_new_tokens": max_new_tokens}
    cases = [
        ("greedy", dict(base)),
        ("greedy_repetition_penalty_1.5", {**base, "repetition_penalty": 1.5}),
        ("greedy_no_repeat_ngram_2", {**base, "no_repeat_ngram_size": 2}),
        ("beam3", {**base, "num_beams": 3, "length_penalty": 1.0, "early_stopping": False}),
        ("beam4_lp0.6_early", {**base, "num_beams": 4, "length_penalty": 0.6, "early_stopping": True}),
        ("beam4_lp2.0_norepeat2", {**base, "num_beams": 4, "length_penalty": 2.0, "early_stopping": False,
                                   "no_repeat_ngram_size": 2}),
        ("beam3_return2_early", {**base, "num_beams": 3, "length_penalty": 1.0, "early_stopping": True,
                                 "num_return_sequences": 2}),
        ("beam4_return2_never", {**base, "num_beams": 4, "length_penalty": 1.0, "early_stopping": "never",
                                 "num_return_sequences": 2}),
    ]
    return cases


def top2_margin(scores: torch.Tensor) -> float:
    finite = torch.where(torch.isfinite(scores), scores, torch.full_like(scores, -1e30))
    top = torch.topk(finite, 2, dim=-1).values
    return float((top[..., 0] - top[..., 1]).min())


class Recorder:
    """Writes .npy files into the reference folder and returns their relative names."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def npy(self, name: str, array: np.ndarray) -> dict:
        array = np.ascontiguousarray(array, dtype=np.float32)
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        write_bytes(self.folder / f"{name}.npy", buffer.getvalue())
        return {"file": f"{name}.npy", "shape": list(array.shape)}


def reference_outputs(spec: Spec, checkpoint: Path, reference: Path, image_files: dict[str, Path]) -> dict:
    torch.manual_seed(0)
    # DESIGN §2 follows PIL's bicubic resize; 5.x would pick the torchvision backend if installed.
    processor = Blip2Processor.from_pretrained(str(checkpoint), backend="pil")
    assert type(processor.image_processor).__name__ == "BlipImageProcessorPil", type(processor.image_processor)
    model, loading = Blip2ForConditionalGeneration.from_pretrained(
        str(checkpoint), dtype=torch.float32, output_loading_info=True)
    model.eval()
    # A key transformers did not load would be silently re-initialised: refuse that.
    problems = {kind: keys for kind, keys in loading.items() if keys}
    assert not problems, f"{checkpoint}: loading problems {problems}"
    tokenizer = processor.tokenizer
    config = model.config
    recorder = Recorder(reference)
    nq = config.num_query_tokens
    image_token_id = config.image_token_index
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) == image_token_id

    result: dict = {
        "model": spec.name,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "precision": "float32 (checkpoint loaded with dtype=torch.float32, eval mode)",
        "image_processor_class": type(processor.image_processor).__name__,
        "tokenizer_class": type(tokenizer).__name__,
        "special_ids": {
            "bos": config.text_config.bos_token_id,
            "eos": config.text_config.eos_token_id,
            "pad": config.text_config.pad_token_id,
            "image": image_token_id,
            "tokenizer_size": len(tokenizer),
            "lm_vocab_size": config.text_config.vocab_size,
        },
        "generation_config": {
            "bos_token_id": model.generation_config.bos_token_id,
            "eos_token_id": model.generation_config.eos_token_id,
            "pad_token_id": model.generation_config.pad_token_id,
        },
        "generate_returns": "input_ids (image placeholders, BOS, prompt) followed by the new tokens; "
                            "new_ids below are sequences[:, len(input_ids):]",
    }

    images = {name: Image.open(path) for name, path in image_files.items()}
    pixel_info = {}
    pixels = {}
    for name, image in images.items():
        encoded = processor(images=image, return_tensors="pt")
        pixels[name] = encoded["pixel_values"]
        pixel_info[name] = {
            "pil_mode": image.mode,
            "size_wh": list(image.size),
            "pixel_values": recorder.npy(f"pixel_values_{Path(name).stem}", encoded["pixel_values"][0].numpy()),
        }
    result["images"] = pixel_info

    pixel_values = pixels[REFERENCE_IMAGE]
    with torch.no_grad():
        vision = model.vision_model(pixel_values=pixel_values, return_dict=True).last_hidden_state
        qformer = model.qformer(
            query_embeds=model.query_tokens.expand(1, -1, -1),
            encoder_hidden_states=vision,
            encoder_attention_mask=torch.ones(vision.shape[:-1], dtype=torch.long),
            return_dict=True,
        ).last_hidden_state
        projected = model.language_projection(qformer)
        features = model.get_image_features(pixel_values=pixel_values, return_dict=True)
    # The two paths must agree, or the forward we record is not the one generate runs.
    assert torch.equal(features.pooler_output, projected)
    result["activations"] = {
        "image": REFERENCE_IMAGE,
        "vision_last_hidden_state": recorder.npy("vision_last_hidden_state", vision[0].numpy()),
        "qformer_last_hidden_state": recorder.npy("qformer_last_hidden_state", qformer[0].numpy()),
        "language_projection": recorder.npy("language_projection", projected[0].numpy()),
    }

    captured: dict = {}

    def capture_embeds(module, args, kwargs):
        if "inputs_embeds" in kwargs and kwargs["inputs_embeds"] is not None and "first" not in captured:
            captured["first"] = kwargs["inputs_embeds"].detach().clone()

    hook = model.language_model.register_forward_pre_hook(capture_embeds, with_kwargs=True)
    margins: list[float] = []
    stability_problems: list[str] = []
    tasks = {}
    try:
        for task, prompt, max_new_tokens in TASKS:
            if prompt is None:
                inputs = processor(images=images[REFERENCE_IMAGE], return_tensors="pt")
                # generate() builds these itself when no text is given.
                input_ids = torch.tensor([[image_token_id] * nq + [config.text_config.bos_token_id]])
                attention_mask = torch.ones_like(input_ids)
                source = "built by Blip2ForConditionalGeneration.generate (no text): <image> x num_query_tokens + BOS"
            else:
                inputs = processor(images=images[REFERENCE_IMAGE], text=prompt, return_tensors="pt")
                input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
                source = "Blip2Processor(images=..., text=prompt)"
            ids_list = input_ids[0].tolist()
            assert ids_list[:nq] == [image_token_id] * nq and ids_list[nq] == config.text_config.bos_token_id

            captured.clear()
            with torch.no_grad():
                out = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask)
            first_logits = out.logits[0, -1]
            entry = {
                "prompt": prompt,
                "input_ids_source": source,
                "input_ids": ids_list,
                "attention_mask": attention_mask[0].tolist(),
                "prompt_ids": ids_list[nq:],
                "prompt_ids_note": "BOS + tokenizer(prompt, add_special_tokens=False); these follow the "
                                   "num_query_tokens projected query embeddings",
                "inputs_embeds": recorder.npy(f"inputs_embeds_{task}", captured["first"][0].numpy()),
                "first_step_logits": recorder.npy(f"first_step_logits_{task}", first_logits.numpy()),
                "first_step_argmax": int(first_logits.argmax()),
                "generations": [],
            }

            for case_name, settings in generation_cases(task, max_new_tokens):
                record = run_generation(model, tokenizer, inputs, input_ids, settings, spec,
                                        config.text_config.eos_token_id, config.text_config.pad_token_id)
                if case_name.startswith("greedy"):
                    margins.append(record["min_top2_margin"])
                    if case_name == "greedy":
                        check_first_step(record, first_logits)
                        if task == "caption":
                            record["step_logits"] = recorder.npy("greedy_step_logits_caption",
                                                                 record.pop("_step_logits"))
                if record.pop("_unstable", False):
                    stability_problems.append(f"{task}/{case_name}")
                record.pop("_step_logits", None)
                entry["generations"].append({"name": case_name, **record})

            # min_new_tokens: chosen to exceed where greedy stops, so it has an effect when EOS appears.
            greedy_ids = entry["generations"][0]["new_ids"][0]
            eos = config.text_config.eos_token_id
            natural = greedy_ids.index(eos) + 1 if eos in greedy_ids else None
            min_new = min(natural + 3, max_new_tokens) if natural else max(2, max_new_tokens // 2)
            settings = {"do_sample": False, "max_new_tokens": max_new_tokens, "min_new_tokens": min_new}
            record = run_generation(model, tokenizer, inputs, input_ids, settings, spec, eos,
                                    config.text_config.pad_token_id)
            record.pop("_step_logits", None)
            margins.append(record["min_top2_margin"])
            if record.pop("_unstable", False):
                stability_problems.append(f"{task}/greedy_min_new_tokens")
            entry["generations"].append({"name": "greedy_min_new_tokens", **record})
            tasks[task] = entry
    finally:
        hook.remove()
    result["tasks"] = tasks

    # End-to-end greedy captions for every test image (image decoding + preprocessing + model).
    per_image = {}
    for name in image_files:
        inputs = processor(images=images[name], return_tensors="pt")
        input_ids = torch.tensor([[image_token_id] * nq + [config.text_config.bos_token_id]])
        record = run_generation(model, tokenizer, inputs, input_ids, {"do_sample": False, "max_new_tokens": 20},
                                spec, config.text_config.eos_token_id, config.text_config.pad_token_id)
        record.pop("_step_logits", None)
        margins.append(record["min_top2_margin"])
        entry = {"greedy": record}
        eos = config.text_config.eos_token_id
        if record["finished_by_eos"][0] and len(record["new_ids_trimmed"][0]) < 18:
            # Ended early: the same caption again with min_new_tokens past that point.
            min_new = len(record["new_ids_trimmed"][0]) + 2
            forced = run_generation(model, tokenizer, inputs, input_ids,
                                    {"do_sample": False, "max_new_tokens": 20, "min_new_tokens": min_new},
                                    spec, eos, config.text_config.pad_token_id)
            forced.pop("_step_logits", None)
            margins.append(forced["min_top2_margin"])
            entry["greedy_min_new_tokens"] = forced
        per_image[name] = entry
    result["greedy_caption_per_image"] = per_image

    default_inputs = processor(images=images[REFERENCE_IMAGE], return_tensors="pt")
    with torch.no_grad():
        default_sequences = model.generate(**default_inputs)
    result["generate_with_no_arguments"] = {
        "note": "model.generate(**processor(images=image)) with no generation arguments, as the walkthrough "
                "calls it (captioning)",
        "generation_config_max_length": model.generation_config.max_length,
        "input_length": nq + 1,
        "sequence_length": default_sequences.shape[1],
        "new_token_count": default_sequences.shape[1] - (nq + 1),
        "new_ids": default_sequences[0, nq + 1:].tolist(),
    }
    result["min_top2_margin_greedy"] = min(margins)
    result["unstable_under_perturbation"] = stability_problems
    return result


PERTURBATION = 1e-3


def run_generation(model, tokenizer, inputs, input_ids, settings: dict, spec: Spec, eos: int, pad: int) -> dict:
    kwargs = dict(settings)
    prompt_length = input_ids.shape[1]
    with torch.no_grad():
        torch.manual_seed(0)
        output = model.generate(**inputs, **kwargs, return_dict_in_generate=True, output_scores=True,
                                output_logits=True)
    sequences = output.sequences
    assert torch.equal(sequences[:, :prompt_length], input_ids.expand(sequences.shape[0], -1)), \
        "generate no longer returns the prompt ids first"
    new_ids = sequences[:, prompt_length:].tolist()
    trimmed = []
    for row in new_ids:
        if eos in row:
            row = row[: row.index(eos) + 1]
        trimmed.append(row)

    record = {
        "settings": settings,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "new_ids": new_ids,
        "new_ids_trimmed": trimmed,
        "finished_by_eos": [eos in row for row in trimmed],
        "text": [tokenizer.decode(row, skip_special_tokens=True).strip() for row in trimmed],
        # What the walkthrough's processor.batch_decode(generated_ids, skip_special_tokens=True) shows:
        # in 5.x the prompt is part of generated_ids, so its text comes back too.
        "walkthrough_decode": [t.strip() for t in tokenizer.batch_decode(sequences, skip_special_tokens=True)],
    }
    if settings.get("repetition_penalty", 1.0) != 1.0:
        # Which ids the penalty touched at the first step: every id already in input_ids.
        raw, processed = output.logits[0][0], output.scores[0][0]
        record["first_step_penalised_ids"] = torch.nonzero(raw != processed).flatten().tolist()
    beams = settings.get("num_beams", 1)
    if beams > 1:
        record["sequences_scores"] = [float(s) for s in output.sequences_scores]
        # Beam choices compare summed log-probs: check that tiny score noise does not change them.
        for seed in range(3):
            with torch.no_grad():
                perturbed = model.generate(**inputs, **kwargs, logits_processor=LogitsProcessorList(
                    [PerturbScores(seed, PERTURBATION)]))
            if not torch.equal(perturbed, sequences):
                record["_unstable"] = True
    else:
        scores = torch.stack([s[0] for s in output.scores])
        record["min_top2_margin"] = top2_margin(scores)
        step_logits = torch.stack([l[0] for l in output.logits]).numpy()
        record["_step_logits"] = step_logits
    return record


def check_first_step(record: dict, first_logits: torch.Tensor) -> None:
    step0 = torch.from_numpy(record["_step_logits"][0])
    difference = float((step0 - first_logits).abs().max())
    # The forward pass and generate's first step see the same inputs_embeds.
    assert difference < 1e-4, f"first-step logits differ between forward and generate by {difference}"
    assert record["new_ids"][0][0] == int(first_logits.argmax())


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, value) -> None:
    write_text(path, json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def checksums(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def describe(spec: Spec) -> dict:
    return {
        "summary": spec.summary,
        "storage_dtype": spec.storage,
        "shards": spec.shards,
        "tie_word_embeddings": spec.tie_word_embeddings,
        "lm_head_weight_stored": (not spec.tie_word_embeddings) or spec.store_tied_lm_head,
        "qkv_bias": spec.qkv_bias,
        "legacy_config": spec.legacy_config,
        "image_size": spec.image_size,
        "patch_size": 14,
        "num_query_tokens": spec.num_query_tokens,
        "cross_attention_frequency": spec.cross_attention_frequency,
        "vision": dataclasses.asdict(spec.vision) | {"layer_norm_eps": spec.vision_layer_norm_eps},
        "qformer": dataclasses.asdict(spec.qformer),
        "text": dataclasses.asdict(spec.text) | {"vocab_size": spec.lm_vocab_size, "max_position_embeddings": 128},
        "eos": "newline" if spec.eos_is_newline else "</s> (2)",
    }


# A greedy step whose two best logits are closer than this is too close to call across
# implementations; beam results must survive score noise of PERTURBATION.
MARGIN_THRESHOLD = 0.005
MAX_ATTEMPTS = 12


def build_model(spec: Spec, model_folder: Path, tokenizer_folder: Path, vocab, image_files) -> tuple[int, dict, dict]:
    """Tries seeds spec.seed, spec.seed + 7919, ... until every recorded decoding is robust."""
    best = None
    for attempt in range(MAX_ATTEMPTS):
        seed = spec.seed + 7919 * attempt
        checkpoint, reference = model_folder / "checkpoint", model_folder / "reference"
        for folder in (checkpoint, reference):
            if folder.exists():
                shutil.rmtree(folder)
        calibration = save_checkpoint(spec, seed, checkpoint, tokenizer_folder, vocab, image_files)
        write_json(model_folder / "tensors.json", tensor_manifest(checkpoint))
        result = reference_outputs(spec, checkpoint, reference, image_files)
        margin, unstable = result["min_top2_margin_greedy"], result["unstable_under_perturbation"]
        print(f"[{spec.name}] attempt {attempt}: seed {seed}, min greedy margin {margin:.4f}, "
              f"unstable {unstable}", file=sys.stderr)
        if margin >= MARGIN_THRESHOLD and not unstable:
            return seed, calibration, result
        score = (-len(unstable), margin)
        if best is None or score > best[0]:
            best = (score, seed)
    # Nothing was clean: rebuild the best attempt and say so in the reference.
    seed = best[1]
    print(f"[{spec.name}] WARNING: no seed met the thresholds; keeping seed {seed}", file=sys.stderr)
    for folder in (model_folder / "checkpoint", model_folder / "reference"):
        shutil.rmtree(folder)
    calibration = save_checkpoint(spec, seed, model_folder / "checkpoint", tokenizer_folder, vocab, image_files)
    write_json(model_folder / "tensors.json", tensor_manifest(model_folder / "checkpoint"))
    result = reference_outputs(spec, model_folder / "checkpoint", model_folder / "reference", image_files)
    return seed, calibration, result


def build(output: Path, only: list[str] | None) -> dict:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    output.mkdir(parents=True, exist_ok=True)

    vocab, merges = train_tokenizer()
    tokenizer_folder = output / "tokenizer"
    write_tokenizer(tokenizer_folder, vocab, merges)
    write_json(tokenizer_folder / "reference.json", tokenizer_reference(tokenizer_folder))

    image_folder = output / "images"
    image_files = {}
    for name, data in make_images().items():
        write_bytes(image_folder / name, data)
        image_files[name] = image_folder / name

    selected = [s for s in SPECS if not only or s.name in only]
    unknown = set(only or []) - {s.name for s in SPECS}
    if unknown:
        raise SystemExit(f"unknown model name(s): {', '.join(sorted(unknown))}; choose from "
                         + ", ".join(s.name for s in SPECS))

    index_path = output / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() and only else {"models": {}}
    for spec in selected:
        model_folder = output / spec.name
        seed, calibration, result = build_model(spec, model_folder, tokenizer_folder, vocab, image_files)
        checkpoint = model_folder / "checkpoint"
        result["spec"] = describe(spec) | {"weights_seed": seed, "eos_calibration": calibration}
        write_json(model_folder / "reference" / "reference.json", result)
        index["models"][spec.name] = {
            **result["spec"],
            "weights_bytes": safetensors_bytes(checkpoint),
            "folder_bytes": folder_bytes(model_folder),
            "min_top2_margin_greedy": result["min_top2_margin_greedy"],
            "unstable_under_perturbation": result["unstable_under_perturbation"],
        }
        print(f"[{spec.name}] seed {seed}, eos {calibration}, weights {safetensors_bytes(checkpoint)} B, "
              f"min greedy margin {result['min_top2_margin_greedy']:.4f}", file=sys.stderr)
    index["models"] = dict(sorted(index["models"].items(), key=lambda kv: [s.name for s in SPECS].index(kv[0])))
    index["generator"] = "Tools/make_fixtures.py"
    index["transformers_version"] = transformers.__version__
    index["reference_image"] = REFERENCE_IMAGE
    index["images"] = sorted(image_files)
    write_json(index_path, index)
    return index


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"fixture folder (default: {DEFAULT_OUTPUT.relative_to(PACKAGE_ROOT)})")
    parser.add_argument("--only", nargs="+", metavar="MODEL",
                        help="rebuild only these models: " + ", ".join(s.name for s in SPECS))
    parser.add_argument("--check", action="store_true",
                        help="build into a temporary folder and compare every file with --output; "
                             "exit 1 on any difference")
    parser.add_argument("--list", action="store_true", help="print the model names and what each one covers")
    args = parser.parse_args()

    if args.list:
        for spec in SPECS:
            print(f"{spec.name:22} {spec.summary}")
        return
    if args.check:
        with tempfile.TemporaryDirectory() as scratch:
            fresh = Path(scratch) / "models"
            build(fresh, None)
            expected, actual = checksums(fresh), checksums(args.output)
            expected.pop("README.md", None)
            actual.pop("README.md", None)
            differing = sorted(k for k in expected.keys() | actual.keys() if expected.get(k) != actual.get(k))
            for name in differing:
                print(f"differs: {name}", file=sys.stderr)
            print(f"{len(expected)} files compared, {len(differing)} differ")
            sys.exit(1 if differing else 0)
    index = build(args.output, args.only)
    total = folder_bytes(args.output)
    print(f"wrote {len(index['models'])} models to {args.output} ({total / 1e6:.2f} MB in total)")


if __name__ == "__main__":
    main()
