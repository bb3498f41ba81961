#!/usr/bin/env python3
"""Writes a model file's weights back out as a Hugging Face checkpoint (model.safetensors, float32), with the
config and tokenizer files of the checkpoint it was converted from.

Two uses:
- bringing the bundled demo model to the converter of the day without retraining: q8 blocks hold their
  values exactly as scale x int8, and converting those values to q8 again gives the same scales and integers
  (max|x| / 127 of a block whose largest value is scale x 127 is the scale), so the new file computes what
  the old one did;
- measuring what a weight format alone costs (Benchmarks/quality.py --weights-only): the quantized file's
  weights, converted back at f32, run with f32 products that quantize nothing else, so any change in the
  tokens comes from the weights and none from the activations the quantized products round.

Reads f32, f16, q8, the panel types q8p and q4p and the super-block types q4k, q3k and q6k (uncompressed);
independent of the Swift reader: it follows docs/FORMAT.md, so it also checks the layouts written there.

    python3 Tools/dequantize_model.py Models/demo-q8.blip2 /work/demo-checkpoint /work/demo-q8-dequant
    blip2-quantize /work/demo-q8-dequant --output Models/demo-q8.blip2 --weights q8
"""
import argparse
import json
import os
import shutil
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blip2file import ModelFile  # noqa: E402

F32, F16, Q8, Q8P, Q4P, Q4K, Q3K, Q6K = 0, 1, 8, 10, 11, 12, 13, 14
QBLOCK, ROWS, SUPERBLOCK = 32, 8, 256


def f16(raw, count):
    return np.frombuffer(raw, dtype="<f2", count=count).astype(np.float32)


def regroup(groups):
    """(..., 8 groups, 32 bytes) in the panel order (byte 4 r + k of group g: row r, input 4 g + k) to
    (..., 8 rows, 32 inputs)."""
    lead = groups.shape[:-2]
    return groups.reshape(*lead, 8, ROWS, 4).swapaxes(-3, -2).reshape(*lead, ROWS, 32)


def nibble_groups(runs):
    """4 runs of 32 bytes (..., 4, 32): group 2p in the low nibbles of run p, group 2p + 1 in the high ones."""
    return np.stack([runs & 15, runs >> 4], axis=-2).reshape(*runs.shape[:-2], 8, 32)


def crumb_groups(runs):
    """2 runs of 32 bytes (..., 2, 32): group g at bit 2 (g % 4) of run g / 4."""
    return np.stack([(runs >> (2 * k)) & 3 for k in range(4)], axis=-2).reshape(*runs.shape[:-2], 8, 32)


def panel_values(etype, raw, rows, cols):
    """The (rows, cols) float32 values of a panel or super-block matrix (docs/FORMAT.md, "Element types")."""
    panels = -(-rows // ROWS)
    data = np.frombuffer(raw, dtype=np.uint8).reshape(panels, -1)
    out = np.empty((panels, ROWS, cols), dtype=np.float32)
    if etype in (Q8P, Q4P):
        width = 272 if etype == Q8P else 160
        for b in range(cols // QBLOCK):
            block = data[:, b * width:(b + 1) * width]
            d = f16(block[:, :16].tobytes(), panels * ROWS).reshape(panels, ROWS, 1)
            if etype == Q8P:
                q = regroup(block[:, 16:].view(np.int8).reshape(panels, 8, 32)).astype(np.float32)
                out[:, :, b * QBLOCK:(b + 1) * QBLOCK] = d * q
            else:
                m = f16(block[:, 16:32].tobytes(), panels * ROWS).reshape(panels, ROWS, 1)
                q = regroup(nibble_groups(block[:, 32:].reshape(panels, 4, 32))).astype(np.float32)
                out[:, :, b * QBLOCK:(b + 1) * QBLOCK] = d * q + m
        return out.reshape(-1, cols)[:rows]
    header, bits, sub, offset = {Q4K: (128, 4, 32, 0), Q3K: (112, 3, 16, 4), Q6K: (144, 6, 16, 32)}[etype]
    start = 0
    for s0 in range(0, cols, SUPERBLOCK):
        count = min(SUPERBLOCK, cols - s0)
        block = data[:, start:start + header + count * bits]
        start += header + count * bits
        d = f16(block[:, :16].tobytes(), panels * ROWS).reshape(panels, ROWS)
        entries = np.arange(SUPERBLOCK // sub * ROWS)  # e = 8 j + r
        if etype == Q4K:
            dmin = f16(block[:, 16:32].tobytes(), panels * ROWS).reshape(panels, ROWS)
            low, mins_low, high = block[:, 32:64], block[:, 64:96], block[:, 96:128]
            shift = np.where(entries < 32, 0, 4)
            scale = (low[:, entries % 32] >> shift) & 15 | ((high[:, entries % 32] >> np.where(entries < 32, 0, 2)) & 3) << 4
            minimum = (mins_low[:, entries % 32] >> shift) & 15 | ((high[:, entries % 32] >> np.where(entries < 32, 4, 6)) & 3) << 4
        elif etype == Q3K:
            low, top = block[:, 16:80], block[:, 80:112]
            scale = ((low[:, entries % 64] >> np.where(entries < 64, 0, 4)) & 15 | ((top[:, entries % 32] >> (2 * (entries // 32))) & 3) << 4).astype(np.int32) - 32
        else:
            scale = block[:, 16:144].view(np.int8)
        values = np.empty((panels, ROWS, count), dtype=np.int32)
        for c in range(count // 32):
            chunk = block[:, header + c * 32 * bits:header + (c + 1) * 32 * bits].reshape(panels, bits, 32)
            if bits == 4:
                q = nibble_groups(chunk)
            elif bits == 6:
                q = nibble_groups(chunk[:, :4]) | crumb_groups(chunk[:, 4:]) << 4
            else:
                top = np.stack([(chunk[:, 2] >> g) & 1 for g in range(8)], axis=-2)
                q = crumb_groups(chunk[:, :2]) | top << 2
            values[:, :, c * 32:(c + 1) * 32] = regroup(q.astype(np.int32))
        j = np.arange(count) // sub
        scale = scale.astype(np.float32).reshape(panels, -1, ROWS).swapaxes(1, 2)[:, :, j]  # (panels, row, input)
        x = d[:, :, None] * scale * (values - offset).astype(np.float32)
        if etype == Q4K:
            minimum = minimum.astype(np.float32).reshape(panels, -1, ROWS).swapaxes(1, 2)[:, :, j]
            x -= dmin[:, :, None] * minimum
        out[:, :, s0:s0 + count] = x
    return out.reshape(-1, cols)[:rows]


def values(model, entry):
    """The tensor's values as float32 little-endian bytes."""
    if entry["compression"] != 0:
        raise SystemExit(f"{entry['name']}: compressed tensors are not supported here; convert without --compress")
    raw = bytes(model.data[entry["offset"]:entry["offset"] + entry["size"]])
    count = 1
    for n in entry["shape"]:
        count *= n
    if entry["type"] == F32:
        return raw
    if entry["type"] == F16:
        return struct.pack(f"<{count}f", *struct.unpack(f"<{count}e", raw))
    if entry["type"] == Q8:
        out = []
        block = 2 + QBLOCK
        for start in range(0, len(raw), block):
            scale, = struct.unpack_from("<e", raw, start)
            out.extend(scale * q for q in struct.unpack_from(f"<{QBLOCK}b", raw, start + 2))
        if len(out) != count:
            raise SystemExit(f"{entry['name']}: {len(out)} values for shape {entry['shape']}")
        return struct.pack(f"<{count}f", *out)
    if entry["type"] in (Q8P, Q4P, Q4K, Q3K, Q6K) and len(entry["shape"]) == 2:
        return panel_values(entry["type"], raw, *entry["shape"]).astype("<f4").tobytes()
    raise SystemExit(f"{entry['name']}: element type {entry['type']} is not one this tool reads "
                     "(f32, f16, q8, q8p, q4p, q4k, q3k, q6k)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a format version 1 model file")
    parser.add_argument("source", help="the checkpoint folder it was converted from (config and tokenizer files)")
    parser.add_argument("output", help="the checkpoint folder to write")
    args = parser.parse_args()
    model = ModelFile.read(args.model)
    os.makedirs(args.output, exist_ok=True)
    for name in sorted(os.listdir(args.source)):
        if not name.endswith(".safetensors") and not name.endswith(".index.json"):
            shutil.copy(os.path.join(args.source, name), os.path.join(args.output, name))
    header, blobs, offset = {}, [], 0
    for entry in model.directory():
        data = values(model, entry)
        header[entry["name"]] = {"dtype": "F32", "shape": entry["shape"], "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path = os.path.join(args.output, "model.safetensors")
    with open(path + ".partial", "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for blob in blobs:
            f.write(blob)
    os.replace(path + ".partial", path)
    print(f"wrote {path}: {len(header)} tensors, {offset} bytes of float32")


if __name__ == "__main__":
    main()
