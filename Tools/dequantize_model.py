#!/usr/bin/env python3
"""Writes a model file's weights back out as a Hugging Face checkpoint (model.safetensors, float32), with the
config and tokenizer files of the checkpoint it was converted from.

Used to bring the bundled demo model to the converter of the day without retraining: q8 blocks hold their
values exactly as scale x int8, and converting those values to q8 again gives the same scales and integers
(max|x| / 127 of a block whose largest value is scale x 127 is the scale), so the new file computes what the
old one did. Reads format version 1 files with f32, f16 and q8 tensors (the panel and super-block types
never need this); independent of the Swift reader: it follows docs/FORMAT.md.

    python3 Tools/dequantize_model.py Models/demo-q8.blip2 /work/demo-checkpoint /work/demo-q8-dequant
    blip2-quantize /work/demo-q8-dequant --output Models/demo-q8.blip2 --weights q8
"""
import argparse
import json
import os
import shutil
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blip2file import ModelFile  # noqa: E402

F32, F16, Q8 = 0, 1, 8
QBLOCK = 32


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
    raise SystemExit(f"{entry['name']}: element type {entry['type']} is not one this tool reads (f32, f16, q8)")


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
