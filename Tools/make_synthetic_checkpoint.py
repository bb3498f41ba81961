#!/usr/bin/env python3
"""Write a full-size synthetic copy of the Hugging Face checkpoint `Salesforce/blip2-opt-2.7b`
(or, with `--model flan-t5-xl`, of `Salesforce/blip2-flan-t5-xl`).

The folder has the real checkpoint's file names, configs, tensor names, shapes and dtypes, with
random values whose scale follows each tensor's role. It exists so that conversion, loading and
speed can be measured at real size where the real weights cannot be downloaded. It is not a
model: its captions are noise.

Needs only Python 3.9+ and numpy. See Tools/README.md for the choices made and how to verify.

    python3 Tools/make_synthetic_checkpoint.py /tmp/blip2-opt-2.7b-synthetic
    python3 Tools/make_synthetic_checkpoint.py /tmp/blip2-flan-t5-xl-synthetic --model flan-t5-xl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import signal
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

# --------------------------------------------------------------------------------------------
# Architecture of blip2-opt-2.7b. Values the hub's config.json leaves out are the defaults that
# transformers applies (Blip2VisionConfig, Blip2QFormerConfig, OPTConfig).
# --------------------------------------------------------------------------------------------

VISION_HIDDEN = 1408
VISION_LAYERS = 39
VISION_HEADS = 16
VISION_INTERMEDIATE = 6144
IMAGE_SIZE = 224
PATCH_SIZE = 14
VISION_POSITIONS = (IMAGE_SIZE // PATCH_SIZE) ** 2 + 1  # 256 patches + class token

QFORMER_HIDDEN = 768
QFORMER_LAYERS = 12
QFORMER_INTERMEDIATE = 3072
CROSS_ATTENTION_FREQUENCY = 2
NUM_QUERY_TOKENS = 32

TEXT_HIDDEN = 2560
TEXT_LAYERS = 32
TEXT_FFN = 10240
TEXT_MAX_POSITIONS = 2048
OPT_POSITION_OFFSET = 2  # OPT's learned positions reserve two leading rows

IMAGE_TOKEN_ID = 50265
TOKENIZER_BASE_SIZE = 50265  # vocab.json ids 0..50264; `<image>` is appended as 50265
PAD_TOKEN_ID = 1

# Flan-T5-XL as blip2-flan-t5-xl's text_config describes it (T5Config defaults where it is silent).
T5_D_MODEL = 2048
T5_D_KV = 64
T5_D_FF = 5120
T5_LAYERS = 24  # num_layers; num_decoder_layers defaults to it
T5_HEADS = 32
T5_VOCAB_SIZE = 32128
T5_BUCKETS = 32
T5_MAX_DISTANCE = 128
T5_IMAGE_TOKEN_ID = 32100  # Blip2Processor appends <image> after the tokenizer's 32100 ids

HUB_VOCAB_SIZE = 50304  # current hub revision: `<image>` added, padded to a multiple of 64
OLD_VOCAB_SIZE = 50272  # revisions before the `<image>` update (OPT's own size)

# transformers saved the hub checkpoint with max_shard_size="10GB" from fp32 tensors.
HUB_SHARD_LIMIT_FP32_BYTES = 10 * 10**9

HUB_TRANSFORMERS_VERSION = "4.47.0.dev0"

DTYPES = {
    # name: (numpy little-endian dtype, safetensors dtype, torch dtype name)
    "fp16": (np.dtype("<f2"), "F16", "float16"),
    "fp32": (np.dtype("<f4"), "F32", "float32"),
}

# Elements generated per step: large enough for numpy to run at full speed, small enough to
# keep the resident set to a few tens of megabytes whatever the tensor size.
CHUNK_ELEMENTS = 1 << 22


class CheckpointError(Exception):
    """A problem the user can fix (bad argument, missing input, no room); printed without a trace."""


# --------------------------------------------------------------------------------------------
# Value recipes per tensor role
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """How to fill one tensor: `mean + std * N(0, 1)`, then role-specific adjustments.

    The tensor is seen as rows of its last dimension; `adjust` gets each chunk of rows with the
    index of its first row, so adjustments stay correct however the tensor is chunked.
    """

    std: float
    mean: float = 0.0
    adjust: Optional[Callable[[np.ndarray, int], None]] = None


def layer_norm_weight() -> Recipe:
    # Trained LayerNorm gains sit around 1 with a modest spread.
    return Recipe(std=0.05, mean=1.0)


def small_bias(std: float = 0.02) -> Recipe:
    return Recipe(std=std)


def linear_weight(std: float, adjust: Optional[Callable[[np.ndarray, int], None]] = None) -> Recipe:
    return Recipe(std=std, adjust=adjust)


def zero_key_third(width: int) -> Callable[[np.ndarray, int], None]:
    """EVA's fused qkv bias is stored as [q_bias, 0, v_bias]: the key bias does not exist."""

    def adjust(rows: np.ndarray, first_row: int) -> None:
        rows[:, width : 2 * width] = 0.0

    return adjust


def scale_input_channels(channels: np.ndarray, factors: np.ndarray) -> Callable[[np.ndarray, int], None]:
    """Make a few input channels (weight columns) much larger than the rest.

    OPT has a handful of hidden dimensions with outsized magnitude shared by every layer; they
    set the scale of any block that contains them, which is what makes blockwise quantization
    of OPT lose precision. The same channels are used in every layer, as in the real model.
    """

    def adjust(rows: np.ndarray, first_row: int) -> None:
        rows[:, channels] *= factors

    return adjust


def embedding_rows(base_size: int, unused_std: float, std: float) -> Callable[[np.ndarray, int], None]:
    """Token embedding rows that were never trained stay near zero; the padding row is zero.

    fairseq keeps the padding embedding at zero; rows past the tokenizer's vocabulary (the
    `<image>` slot and the padding up to a multiple of 64) were added by resizing and never
    trained, so they hold small values near the mean.
    """

    def adjust(rows: np.ndarray, first_row: int) -> None:
        count = rows.shape[0]
        if first_row <= PAD_TOKEN_ID < first_row + count:
            rows[PAD_TOKEN_ID - first_row, :] = 0.0
        start = max(base_size - first_row, 0)
        if start < count:
            rows[start:, :] *= unused_std / std

    return adjust


# Standard deviations per role. They approximate the magnitudes of trained transformer weights
# (0.02 initialisation grown somewhat by training); Tools/README.md lists them with the reasons.
SIGMA = {
    "vision.patch": 0.03,
    "vision.patch_bias": 0.02,
    "vision.class": 0.02,
    "vision.position": 0.02,
    "vision.qkv": 0.03,
    "vision.projection": 0.02,
    "vision.fc1": 0.03,
    "vision.fc2": 0.02,
    "qformer.query_tokens": 0.02,
    "qformer.qk": 0.04,
    "qformer.value": 0.03,
    "qformer.cross_kv": 0.03,
    "qformer.dense": 0.03,
    "qformer.intermediate": 0.04,
    "qformer.output": 0.03,
    "projection": 0.02,
    "opt.embed": 0.02,
    "opt.embed_unused": 0.002,
    "opt.position": 0.02,
    "opt.qkv": 0.02,
    "opt.out": 0.015,
    "opt.fc1": 0.02,
    "opt.fc2": 0.015,
    "bias": 0.02,
    "opt.bias": 0.01,
    # Flan-T5-XL: T5 scales no attention score by 1/sqrt(d_kv), so its q and k stay small; the shared
    # embedding, read without scaling, is larger.
    "t5.embed": 0.5,
    "t5.qkv": 0.01,
    "t5.out": 0.02,
    "t5.wi": 0.02,
    "t5.wo": 0.015,
    "t5.relative_bias": 0.1,
    "t5.lm_head": 0.02,
}

OPT_OUTLIER_CHANNELS = 6
OPT_OUTLIER_FACTOR_RANGE = (4.0, 8.0)


# --------------------------------------------------------------------------------------------
# Tensor plan
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: Tuple[int, ...]
    recipe: Recipe
    # Tensors with the same seed key get the same values (the tied `lm_head` repeats the
    # token embedding exactly, as saving a tied model would).
    seed_key: str

    @property
    def count(self) -> int:
        return math.prod(self.shape)


@dataclass
class Shard:
    file_name: str
    tensors: List[TensorSpec] = field(default_factory=list)


def outlier_channels(seed: int) -> Tuple[np.ndarray, np.ndarray]:
    rng = np.random.Generator(np.random.PCG64(seed_sequence(seed, "opt.outlier-channels")))
    channels = np.sort(rng.choice(TEXT_HIDDEN, size=OPT_OUTLIER_CHANNELS, replace=False))
    factors = rng.uniform(*OPT_OUTLIER_FACTOR_RANGE, size=OPT_OUTLIER_CHANNELS).astype(np.float32)
    return channels, factors


def build_plan(vocab_size: int, lm_head: bool, seed: int, model: str = "opt-2.7b") -> List[TensorSpec]:
    """Every tensor in the order of `Blip2ForConditionalGeneration.state_dict()`.

    The order matters: transformers fills shards in this order, so it decides which shard a
    tensor lands in.
    """
    specs: List[TensorSpec] = []

    def add(name: str, shape: Sequence[int], recipe: Recipe, seed_key: Optional[str] = None) -> None:
        specs.append(TensorSpec(name, tuple(shape), recipe, seed_key or name))

    def linear(prefix: str, out_features: int, in_features: int, weight: Recipe, bias: Recipe) -> None:
        add(f"{prefix}.weight", (out_features, in_features), weight)
        add(f"{prefix}.bias", (out_features,), bias)

    def layer_norm(prefix: str, width: int) -> None:
        add(f"{prefix}.weight", (width,), layer_norm_weight())
        add(f"{prefix}.bias", (width,), small_bias())

    add("query_tokens", (1, NUM_QUERY_TOKENS, QFORMER_HIDDEN), Recipe(std=SIGMA["qformer.query_tokens"]))

    v = "vision_model"
    add(f"{v}.embeddings.class_embedding", (1, 1, VISION_HIDDEN), Recipe(std=SIGMA["vision.class"]))
    add(f"{v}.embeddings.position_embedding", (1, VISION_POSITIONS, VISION_HIDDEN), Recipe(std=SIGMA["vision.position"]))
    add(f"{v}.embeddings.patch_embedding.weight", (VISION_HIDDEN, 3, PATCH_SIZE, PATCH_SIZE), Recipe(std=SIGMA["vision.patch"]))
    add(f"{v}.embeddings.patch_embedding.bias", (VISION_HIDDEN,), small_bias(SIGMA["vision.patch_bias"]))
    for i in range(VISION_LAYERS):
        p = f"{v}.encoder.layers.{i}"
        add(f"{p}.self_attn.qkv.weight", (3 * VISION_HIDDEN, VISION_HIDDEN), linear_weight(SIGMA["vision.qkv"]))
        add(f"{p}.self_attn.qkv.bias", (3 * VISION_HIDDEN,), Recipe(std=SIGMA["bias"], adjust=zero_key_third(VISION_HIDDEN)))
        linear(f"{p}.self_attn.projection", VISION_HIDDEN, VISION_HIDDEN, linear_weight(SIGMA["vision.projection"]), small_bias(0.01))
        layer_norm(f"{p}.layer_norm1", VISION_HIDDEN)
        linear(f"{p}.mlp.fc1", VISION_INTERMEDIATE, VISION_HIDDEN, linear_weight(SIGMA["vision.fc1"]), small_bias())
        linear(f"{p}.mlp.fc2", VISION_HIDDEN, VISION_INTERMEDIATE, linear_weight(SIGMA["vision.fc2"]), small_bias(0.01))
        layer_norm(f"{p}.layer_norm2", VISION_HIDDEN)
    layer_norm(f"{v}.post_layernorm", VISION_HIDDEN)

    q = "qformer"
    layer_norm(f"{q}.layernorm", QFORMER_HIDDEN)
    for i in range(QFORMER_LAYERS):
        p = f"{q}.encoder.layer.{i}"
        attention_blocks = [("attention", QFORMER_HIDDEN, "qformer.value")]
        if i % CROSS_ATTENTION_FREQUENCY == 0:
            attention_blocks.append(("crossattention", VISION_HIDDEN, "qformer.cross_kv"))
        for block, kv_width, kv_sigma in attention_blocks:
            linear(f"{p}.{block}.attention.query", QFORMER_HIDDEN, QFORMER_HIDDEN, linear_weight(SIGMA["qformer.qk"]), small_bias())
            key_sigma = SIGMA["qformer.qk"] if block == "attention" else SIGMA["qformer.cross_kv"]
            linear(f"{p}.{block}.attention.key", QFORMER_HIDDEN, kv_width, linear_weight(key_sigma), small_bias())
            linear(f"{p}.{block}.attention.value", QFORMER_HIDDEN, kv_width, linear_weight(SIGMA[kv_sigma]), small_bias())
            linear(f"{p}.{block}.output.dense", QFORMER_HIDDEN, QFORMER_HIDDEN, linear_weight(SIGMA["qformer.dense"]), small_bias())
            layer_norm(f"{p}.{block}.output.LayerNorm", QFORMER_HIDDEN)
        linear(f"{p}.intermediate_query.dense", QFORMER_INTERMEDIATE, QFORMER_HIDDEN, linear_weight(SIGMA["qformer.intermediate"]), small_bias())
        linear(f"{p}.output_query.dense", QFORMER_HIDDEN, QFORMER_INTERMEDIATE, linear_weight(SIGMA["qformer.output"]), small_bias())
        layer_norm(f"{p}.output_query.LayerNorm", QFORMER_HIDDEN)

    if model == "flan-t5-xl":
        linear("language_projection", T5_D_MODEL, QFORMER_HIDDEN, linear_weight(SIGMA["projection"]), small_bias(0.01))
        t5_plan(add)
        return specs
    linear("language_projection", TEXT_HIDDEN, QFORMER_HIDDEN, linear_weight(SIGMA["projection"]), small_bias(0.01))

    channels, factors = outlier_channels(seed)
    outliers = scale_input_channels(channels, factors)
    d = "language_model.model.decoder"
    embed_name = f"{d}.embed_tokens.weight"
    embed_recipe = Recipe(
        std=SIGMA["opt.embed"],
        adjust=embedding_rows(TOKENIZER_BASE_SIZE, SIGMA["opt.embed_unused"], SIGMA["opt.embed"]),
    )
    add(embed_name, (vocab_size, TEXT_HIDDEN), embed_recipe)
    add(f"{d}.embed_positions.weight", (TEXT_MAX_POSITIONS + OPT_POSITION_OFFSET, TEXT_HIDDEN), Recipe(std=SIGMA["opt.position"]))
    layer_norm(f"{d}.final_layer_norm", TEXT_HIDDEN)
    opt_bias = small_bias(SIGMA["opt.bias"])
    for i in range(TEXT_LAYERS):
        p = f"{d}.layers.{i}"
        for proj in ("k_proj", "v_proj", "q_proj"):
            linear(f"{p}.self_attn.{proj}", TEXT_HIDDEN, TEXT_HIDDEN, linear_weight(SIGMA["opt.qkv"], outliers), opt_bias)
        linear(f"{p}.self_attn.out_proj", TEXT_HIDDEN, TEXT_HIDDEN, linear_weight(SIGMA["opt.out"]), opt_bias)
        layer_norm(f"{p}.self_attn_layer_norm", TEXT_HIDDEN)
        linear(f"{p}.fc1", TEXT_FFN, TEXT_HIDDEN, linear_weight(SIGMA["opt.fc1"], outliers), opt_bias)
        linear(f"{p}.fc2", TEXT_HIDDEN, TEXT_FFN, linear_weight(SIGMA["opt.fc2"]), opt_bias)
        layer_norm(f"{p}.final_layer_norm", TEXT_HIDDEN)
    if lm_head:
        add("language_model.lm_head.weight", (vocab_size, TEXT_HIDDEN), embed_recipe, seed_key=embed_name)
    return specs


def t5_plan(add: Callable[..., None]) -> None:
    """Flan-T5-XL under `language_model.`, in T5ForConditionalGeneration's state-dict order: `shared`, the
    encoder blocks (the relative position bias in block 0 only), the decoder blocks (self-attention,
    cross-attention, gated-GELU feed-forward), the final norms and the untied lm_head. Norms are RMS norms
    with a weight only; no projection has a bias. Copies of `shared` as the stacks' embed_tokens are not
    written (save_pretrained drops them)."""
    m = "language_model"
    inner = T5_HEADS * T5_D_KV

    def attention(prefix: str, relative_bias: bool) -> None:
        for name in ("q", "k", "v"):
            add(f"{prefix}.{name}.weight", (inner, T5_D_MODEL), linear_weight(SIGMA["t5.qkv"]))
        add(f"{prefix}.o.weight", (T5_D_MODEL, inner), linear_weight(SIGMA["t5.out"]))
        if relative_bias:
            add(f"{prefix}.relative_attention_bias.weight", (T5_BUCKETS, T5_HEADS), Recipe(std=SIGMA["t5.relative_bias"]))

    def feed_forward(prefix: str) -> None:
        for name in ("wi_0", "wi_1"):
            add(f"{prefix}.DenseReluDense.{name}.weight", (T5_D_FF, T5_D_MODEL), linear_weight(SIGMA["t5.wi"]))
        add(f"{prefix}.DenseReluDense.wo.weight", (T5_D_MODEL, T5_D_FF), linear_weight(SIGMA["t5.wo"]))
        add(f"{prefix}.layer_norm.weight", (T5_D_MODEL,), layer_norm_weight())

    add(f"{m}.shared.weight", (T5_VOCAB_SIZE, T5_D_MODEL), Recipe(std=SIGMA["t5.embed"]))
    for stack, cross in (("encoder", False), ("decoder", True)):
        for i in range(T5_LAYERS):
            p = f"{m}.{stack}.block.{i}.layer"
            attention(f"{p}.0.SelfAttention", relative_bias=i == 0)
            add(f"{p}.0.layer_norm.weight", (T5_D_MODEL,), layer_norm_weight())
            if cross:
                attention(f"{p}.1.EncDecAttention", relative_bias=False)
                add(f"{p}.1.layer_norm.weight", (T5_D_MODEL,), layer_norm_weight())
            feed_forward(f"{p}.{2 if cross else 1}")
        add(f"{m}.{stack}.final_layer_norm.weight", (T5_D_MODEL,), layer_norm_weight())
    add(f"{m}.lm_head.weight", (T5_VOCAB_SIZE, T5_D_MODEL), Recipe(std=SIGMA["t5.lm_head"]))


def assign_shards(specs: List[TensorSpec], shard_count: int) -> List[Shard]:
    """Split tensors, in state-dict order, into `shard_count` files.

    Two shards reproduce the hub's split point: transformers starts a new shard when the next
    fp32 tensor would push the current one past 10 GB, whatever dtype is written here. Other
    counts cut the fp32 byte stream into equal parts.
    """
    if shard_count == 1:
        return [Shard("model.safetensors", list(specs))]

    fp32_sizes = [4 * spec.count for spec in specs]
    groups: List[List[TensorSpec]] = []
    if shard_count == 2:
        current: List[TensorSpec] = []
        current_bytes = 0
        for spec, size in zip(specs, fp32_sizes):
            if current and current_bytes + size > HUB_SHARD_LIMIT_FP32_BYTES:
                groups.append(current)
                current, current_bytes = [], 0
            current.append(spec)
            current_bytes += size
        groups.append(current)
    else:
        total = sum(fp32_sizes)
        groups = [[] for _ in range(shard_count)]
        position = 0
        for spec, size in zip(specs, fp32_sizes):
            middle = position + size / 2
            groups[min(int(middle * shard_count / total), shard_count - 1)].append(spec)
            position += size

    if len(groups) != shard_count or any(not group for group in groups):
        raise CheckpointError(
            f"cannot split {len(specs)} tensors into {shard_count} non-empty shards; choose fewer shards"
        )
    return [
        Shard(f"model-{index + 1:05d}-of-{shard_count:05d}.safetensors", group)
        for index, group in enumerate(groups)
    ]


# --------------------------------------------------------------------------------------------
# Random values
# --------------------------------------------------------------------------------------------


def seed_sequence(seed: int, key: str) -> np.random.SeedSequence:
    """Derive an independent stream per tensor from the user seed and the tensor's name.

    Values then depend only on (seed, name): not on dtype, shard layout, write order or
    chunk size.
    """
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    words = struct.unpack("<8I", digest)
    return np.random.SeedSequence([seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, *words])


class ValueWriter:
    """Generates tensors chunk by chunk into reusable buffers and writes them to a file."""

    def __init__(self, dtype: np.dtype, seed: int):
        self.dtype = dtype
        self.seed = seed
        self.scratch = np.empty(CHUNK_ELEMENTS, dtype=np.float32)
        self.converted = np.empty(CHUNK_ELEMENTS, dtype=dtype)
        # fp32 on a little-endian host is already in file layout: skip the copy.
        self.write_scratch_directly = dtype == np.dtype("<f4") and sys.byteorder == "little"

    def write(self, spec: TensorSpec, sink, on_bytes: Callable[[int], None]) -> None:
        rng = np.random.Generator(np.random.PCG64(seed_sequence(self.seed, spec.seed_key)))
        width = spec.shape[-1]
        total_rows = spec.count // width
        rows_per_chunk = max(1, CHUNK_ELEMENTS // width)
        if width > CHUNK_ELEMENTS:
            raise CheckpointError(f"tensor {spec.name} has rows wider than the chunk buffer")
        recipe = spec.recipe
        row = 0
        while row < total_rows:
            rows = min(rows_per_chunk, total_rows - row)
            n = rows * width
            values = self.scratch[:n]
            rng.standard_normal(out=values, dtype=np.float32)
            values *= np.float32(recipe.std)
            if recipe.mean:
                values += np.float32(recipe.mean)
            if recipe.adjust is not None:
                recipe.adjust(values.reshape(rows, width), row)
            if self.write_scratch_directly:
                out = values
            else:
                out = self.converted[:n]
                out[...] = values
            sink.write(memoryview(out).cast("B"))
            on_bytes(n * self.dtype.itemsize)
            row += rows


# --------------------------------------------------------------------------------------------
# safetensors, written by hand
# --------------------------------------------------------------------------------------------


def safetensors_header(tensors: List[TensorSpec], dtype_name: str, itemsize: int) -> Tuple[bytes, List[TensorSpec]]:
    """Header bytes and the order in which tensor data must follow it.

    Layout: 8-byte little-endian header length, JSON header, raw little-endian data. Data is
    laid out in name order (what the safetensors library does for tensors of one dtype) and
    the header is padded with spaces to a multiple of 8 so the data starts aligned.
    """
    ordered = sorted(tensors, key=lambda spec: spec.name)
    header: Dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for spec in ordered:
        size = spec.count * itemsize
        header[spec.name] = {"dtype": dtype_name, "shape": list(spec.shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded, ordered


# --------------------------------------------------------------------------------------------
# Configs and tokenizer files, as the hub's current revision has them
# --------------------------------------------------------------------------------------------


def model_config(vocab_size: int, torch_dtype: str) -> dict:
    """config.json of the hub's current revision (transformers 4.47.0.dev0 save: defaults omitted).

    Two deliberate differences: the top-level dtype names the dtype actually stored, and it is
    written under both keys, `torch_dtype` (transformers 4.x, what the hub has) and `dtype`
    (transformers 5.x), so readers of either spelling are exercised.
    """
    text_config = {
        "_name_or_path": "facebook/opt-2.7b",
        "activation_dropout": 0.0,
        "architectures": ["OPTForCausalLM"],
        "eos_token_id": 50118,
        "ffn_dim": TEXT_FFN,
        "hidden_size": TEXT_HIDDEN,
        "model_type": "opt",
        "num_attention_heads": 32,
        "num_hidden_layers": TEXT_LAYERS,
        "prefix": "</s>",
        "torch_dtype": "float16",
        "word_embed_proj_dim": TEXT_HIDDEN,
    }
    if vocab_size != OLD_VOCAB_SIZE:
        # OPTConfig's default is 50272, which is why older revisions did not spell it out.
        text_config["vocab_size"] = vocab_size
    return {
        "architectures": ["Blip2ForConditionalGeneration"],
        "dtype": torch_dtype,
        "image_text_hidden_size": 256,
        "image_token_index": IMAGE_TOKEN_ID,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "model_type": "blip-2",
        "num_query_tokens": NUM_QUERY_TOKENS,
        "qformer_config": {"classifier_dropout": None, "model_type": "blip_2_qformer"},
        "text_config": text_config,
        "torch_dtype": torch_dtype,
        "transformers_version": HUB_TRANSFORMERS_VERSION,
        "use_decoder_only_language_model": True,
        "vision_config": {
            "dropout": 0.0,
            "initializer_factor": 1.0,
            "model_type": "blip_2_vision_model",
            "num_channels": 3,
            "projection_dim": 512,
        },
    }


def t5_model_config(torch_dtype: str) -> dict:
    """config.json of blip2-flan-t5-xl (its text_config as the hub's T5Config save spells it)."""
    config = model_config(T5_VOCAB_SIZE, torch_dtype)
    config["image_token_index"] = T5_IMAGE_TOKEN_ID
    config["use_decoder_only_language_model"] = False
    config["text_config"] = {
        "_name_or_path": "google/flan-t5-xl",
        "architectures": ["T5ForConditionalGeneration"],
        "d_ff": T5_D_FF,
        "d_kv": T5_D_KV,
        "d_model": T5_D_MODEL,
        "decoder_start_token_id": 0,
        "dense_act_fn": "gelu_new",
        "eos_token_id": 1,
        "feed_forward_proj": "gated-gelu",
        "is_gated_act": True,
        "layer_norm_epsilon": 1e-06,
        "model_type": "t5",
        "n_positions": 512,
        "num_heads": T5_HEADS,
        "num_layers": T5_LAYERS,
        "output_past": True,
        "pad_token_id": 0,
        "relative_attention_max_distance": T5_MAX_DISTANCE,
        "relative_attention_num_buckets": T5_BUCKETS,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "vocab_size": T5_VOCAB_SIZE,
    }
    return config


def t5_generation_config() -> dict:
    return {"_from_model_config": True, "decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0,
            "transformers_version": HUB_TRANSFORMERS_VERSION}


def generation_config() -> dict:
    return {
        "_from_model_config": True,
        "bos_token_id": 2,
        "eos_token_id": 50118,
        "pad_token_id": PAD_TOKEN_ID,
        "transformers_version": HUB_TRANSFORMERS_VERSION,
    }


def preprocessor_config() -> dict:
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
        "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    }


def processor_config() -> dict:
    return {"num_query_tokens": NUM_QUERY_TOKENS, "processor_class": "Blip2Processor"}


def _added_token(content: str, normalized: bool, special: Optional[bool] = None) -> dict:
    token = {"content": content, "lstrip": False, "normalized": normalized, "rstrip": False, "single_word": False}
    if special is not None:
        token["special"] = special
    return token


def tokenizer_config() -> dict:
    # `<image>` is added by Blip2Processor as a special token that is not normalized, which is
    # what makes it match literally in text before byte-level BPE runs.
    return {
        "add_bos_token": True,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(PAD_TOKEN_ID): _added_token("<pad>", True, True),
            "2": _added_token("</s>", True, True),
            str(IMAGE_TOKEN_ID): _added_token("<image>", False, True),
        },
        "bos_token": "</s>",
        "clean_up_tokenization_spaces": True,
        "eos_token": "</s>",
        "errors": "replace",
        "model_max_length": int(1e30),
        "pad_token": "<pad>",
        "processor_class": "Blip2Processor",
        "tokenizer_class": "GPT2Tokenizer",
        "unk_token": "</s>",
    }


def special_tokens_map() -> dict:
    end = _added_token("</s>", True)
    return {"bos_token": end, "eos_token": end, "pad_token": _added_token("<pad>", True), "unk_token": end}


def json_text(value: object) -> str:
    # transformers writes its JSON files this way; matching it keeps file sizes equal to the hub's.
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def check_tokenizer_dir(directory: Path) -> None:
    for name in ("vocab.json", "merges.txt"):
        if not (directory / name).is_file():
            raise CheckpointError(
                f"{directory / name} not found; pass --tokenizer-dir with the OPT tokenizer's vocab.json and merges.txt"
            )
    try:
        vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{directory / 'vocab.json'} is not readable JSON: {error}") from error
    if not isinstance(vocab, dict):
        raise CheckpointError(f"{directory / 'vocab.json'} must map tokens to ids")
    expected = {"<pad>": PAD_TOKEN_ID, "</s>": 2}
    if any(vocab.get(token) != token_id for token, token_id in expected.items()):
        raise CheckpointError(f"{directory / 'vocab.json'} is not OPT's vocabulary (<pad> must be 1 and </s> 2)")
    if len(vocab) != TOKENIZER_BASE_SIZE or max(vocab.values()) != TOKENIZER_BASE_SIZE - 1:
        raise CheckpointError(
            f"{directory / 'vocab.json'} has {len(vocab)} entries; OPT's has {TOKENIZER_BASE_SIZE} "
            f"(ids 0..{TOKENIZER_BASE_SIZE - 1}) so that <image> gets id {IMAGE_TOKEN_ID}"
        )


def write_side_files(directory: Path, tokenizer_dir: Path, vocab_size: int, torch_dtype: str, model: str = "opt-2.7b") -> None:
    if model == "flan-t5-xl":
        files = {
            "config.json": t5_model_config(torch_dtype),
            "generation_config.json": t5_generation_config(),
            "preprocessor_config.json": preprocessor_config(),
            "processor_config.json": processor_config(),
        }
        for name, value in files.items():
            (directory / name).write_text(json_text(value), encoding="utf-8")
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(tokenizer_dir / name, directory / name)
        return
    files = {
        "config.json": model_config(vocab_size, torch_dtype),
        "generation_config.json": generation_config(),
        "preprocessor_config.json": preprocessor_config(),
        "processor_config.json": processor_config(),
        "tokenizer_config.json": tokenizer_config(),
        "special_tokens_map.json": special_tokens_map(),
        "added_tokens.json": {"<image>": IMAGE_TOKEN_ID},
    }
    for name, value in files.items():
        (directory / name).write_text(json_text(value), encoding="utf-8")
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(tokenizer_dir / name, directory / name)


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


class Progress:
    """One line per step of a few percent on stderr; rewrites in place on a terminal."""

    def __init__(self, total_bytes: int):
        self.total = total_bytes
        self.done = 0
        self.start = time.monotonic()
        self.last_report = -1.0
        self.interactive = sys.stderr.isatty()
        self.label = ""

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last_report >= (0.5 if self.interactive else 5.0) or self.done == self.total:
            self.last_report = now
            self.report(now)

    def report(self, now: float) -> None:
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        remaining = (self.total - self.done) / rate if rate > 0 else 0.0
        line = (
            f"{100 * self.done / self.total:5.1f}%  {self.done / 1e9:5.2f}/{self.total / 1e9:.2f} GB  "
            f"{rate / 1e6:6.1f} MB/s  eta {remaining:4.0f}s  {self.label}"
        )
        if self.interactive:
            sys.stderr.write("\r\x1b[K" + line)
            if self.done == self.total:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def check_t5_tokenizer_dir(directory: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory / name} not found; pass --tokenizer-dir with a T5 tokenizer.json and tokenizer_config.json")


def default_tokenizer_dir(model: str = "opt-2.7b") -> Path:
    repo_root = Path(__file__).resolve().parent.parent
    if model == "flan-t5-xl":
        # No full T5 vocabulary ships here: the SentencePiece test tokenizer stands in (ids below 32100, so
        # <image> still lands at 32100). Pass --tokenizer-dir with Flan-T5's own files for real text.
        return repo_root / "Tests" / "Fixtures" / "tokenizer" / "t5" / "nmt_nfkc"
    shared = os.environ.get("BLIP2_SHARED_DIR")
    if shared:
        return Path(shared) / "tokenizers" / "opt"
    return repo_root.parent / "shared" / "tokenizers" / "opt"


def parse_arguments(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Write a synthetic Salesforce/blip2-opt-2.7b checkpoint folder: real names, shapes, "
        "dtypes and configs; random values with per-role statistics. Needs only numpy.",
    )
    parser.add_argument("output", type=Path, help="folder to create, e.g. /tmp/blip2-opt-2.7b-synthetic")
    parser.add_argument("--model", choices=("opt-2.7b", "flan-t5-xl"), default="opt-2.7b", help="Salesforce/blip2-opt-2.7b (default) or Salesforce/blip2-flan-t5-xl (fp16 ~7.8 GB; --lm-head and --vocab-size do not apply)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16", help="stored weight dtype (default fp16, ~7.5 GB; fp32 ~15 GB)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same values")
    parser.add_argument("--tokenizer-dir", type=Path, default=None, help="folder with OPT's vocab.json and merges.txt (default ../shared/tokenizers/opt from the repo root, or $BLIP2_SHARED_DIR/tokenizers/opt)")
    parser.add_argument("--lm-head", choices=("absent", "present"), default="absent", help="store language_model.lm_head.weight (tied copy of embed_tokens)? The current hub revision does not (default absent)")
    parser.add_argument("--vocab-size", type=int, choices=(HUB_VOCAB_SIZE, OLD_VOCAB_SIZE), default=HUB_VOCAB_SIZE, help="language model rows: 50304 (current hub revision, default) or 50272 (older revisions)")
    parser.add_argument("--shards", type=int, default=2, help="number of safetensors files (default 2, split where the hub splits; 1 writes model.safetensors without an index)")
    parser.add_argument("--force", action="store_true", help="replace the output folder if it exists")
    parser.add_argument("--dry-run", action="store_true", help="print the tensor plan as JSON (name, shape, dtype, file) and write nothing")
    arguments = parser.parse_args(argv)
    if not 1 <= arguments.shards <= 64:
        parser.error("--shards must be between 1 and 64")
    if not 0 <= arguments.seed < 2**64:
        parser.error("--seed must be between 0 and 2**64 - 1")
    return arguments


def run(arguments: argparse.Namespace) -> int:
    dtype, safetensors_dtype, torch_dtype = DTYPES[arguments.dtype]
    specs = build_plan(arguments.vocab_size, arguments.lm_head == "present", arguments.seed, arguments.model)
    shards = assign_shards(specs, arguments.shards)
    total_bytes = sum(spec.count for spec in specs) * dtype.itemsize

    if arguments.dry_run:
        plan = [
            {"name": spec.name, "shape": list(spec.shape), "dtype": safetensors_dtype, "file": shard.file_name}
            for shard in shards
            for spec in shard.tensors
        ]
        print(json.dumps({"total_size": total_bytes, "tensors": plan}, indent=1))
        return 0

    tokenizer_dir = arguments.tokenizer_dir or default_tokenizer_dir(arguments.model)
    (check_t5_tokenizer_dir if arguments.model == "flan-t5-xl" else check_tokenizer_dir)(tokenizer_dir)

    output = arguments.output.resolve()
    if output.exists() and not arguments.force:
        raise CheckpointError(f"{output} already exists; pass --force to replace it or choose another folder")
    output.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(output.parent).free
    if free < total_bytes + (64 << 20):
        raise CheckpointError(
            f"{output.parent} has {free / 1e9:.1f} GB free; this checkpoint needs {total_bytes / 1e9:.1f} GB"
        )

    # Everything goes into a sibling folder that is renamed into place only when complete, so an
    # interrupted run never leaves something that looks like a checkpoint.
    staging = output.parent / f"{output.name}.blip2.tmp-{os.getpid()}"
    staging.mkdir()
    try:
        started = time.monotonic()
        print(
            f"writing {len(specs)} tensors ({total_bytes / 1e9:.2f} GB {arguments.dtype}) in {len(shards)} "
            f"file(s) to {output}",
            file=sys.stderr,
        )
        write_side_files(staging, tokenizer_dir, arguments.vocab_size, torch_dtype, arguments.model)
        progress = Progress(total_bytes)
        writer = ValueWriter(dtype, arguments.seed)
        weight_map: Dict[str, str] = {}
        for shard_index, shard in enumerate(shards):
            header, ordered = safetensors_header(shard.tensors, safetensors_dtype, dtype.itemsize)
            with open(staging / shard.file_name, "wb", buffering=1 << 20) as sink:
                sink.write(header)
                for spec in ordered:
                    progress.label = f"[{shard_index + 1}/{len(shards)}] {spec.name}"
                    writer.write(spec, sink, progress.advance)
                    weight_map[spec.name] = shard.file_name
        if len(shards) > 1:
            index = {"metadata": {"total_size": total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
            (staging / "model.safetensors.index.json").write_text(json_text(index), encoding="utf-8")

        if output.exists():
            retired = output.parent / f"{output.name}.blip2.tmp-old-{os.getpid()}"
            output.rename(retired)
            staging.rename(output)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(output)
        elapsed = time.monotonic() - started
        print(f"done in {elapsed:.0f}s: {output}", file=sys.stderr)
        return 0
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def main(argv: Optional[Sequence[str]] = None) -> int:
    # Turn SIGTERM into an exception so the staging folder is removed on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    arguments = parse_arguments(argv)
    try:
        return run(arguments)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; nothing was left behind", file=sys.stderr)
        return 130
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
