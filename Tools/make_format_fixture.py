#!/usr/bin/env python3
"""Write Tests/Fixtures/format/tiny-v1.blip2 from the specification in docs/FORMAT.md.

An independent writer (standard library only): the Swift reader must accept what this script lays
out by hand, so the reader and the document cannot drift apart unnoticed.

    python3 Tools/make_format_fixture.py
"""
import json
import pathlib
import struct


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def main():
    root = pathlib.Path(__file__).resolve().parent.parent
    out = root / "Tests" / "Fixtures" / "format" / "tiny-v1.blip2"

    norm = struct.pack("<3f", 1.0, 2.0, 3.0)                      # f32 [3]
    # q8 [1, 64]: two blocks of (f16 scale, 32 x int8)
    q8 = b"".join(struct.pack("<e", scale) + bytes((i * 7 + b) % 256 for i in range(32))
                  for b, scale in enumerate((0.5, 0.25)))
    tensors = [("vision_model.post_layernorm.weight", 0, [3], norm, 1),
               ("language_projection.weight", 8, [1, 64], q8, 32)]

    data = bytearray()
    entries = []
    position = 128
    for name, type_id, shape, payload, block in tensors:
        start = align(position, 64)
        data += bytes(start - position)
        data += payload
        position = start + len(payload)
        entries.append((name, type_id, shape, start, payload, block))
    data_size = position - 128

    directory_offset = align(position, 64)
    padding = directory_offset - position
    directory = bytearray()
    for name, type_id, shape, start, payload, block in entries:
        raw = name.encode()
        directory += struct.pack("<H", len(raw)) + raw
        directory += struct.pack("<BBBBI", type_id, 0, len(shape), 0, block)
        directory += b"".join(struct.pack("<Q", d) for d in shape)
        directory += struct.pack("<QQQI", start, len(payload), len(payload), crc32c(payload))

    sections = [("config", json.dumps({"model_type": "blip-2"}).encode()), ("quantization", b"{}")]
    metadata = struct.pack("<I", len(sections))
    for name, body in sections:
        metadata += struct.pack("<H", len(name)) + name.encode() + struct.pack("<Q", len(body)) + body

    metadata_offset = directory_offset + len(directory)
    file_size = metadata_offset + len(metadata)
    header = bytearray(b"BLIP2EDG")
    header += struct.pack("<II", 1, 128)
    header += struct.pack("<7Q", file_size, 128, data_size, directory_offset, len(directory), metadata_offset, len(metadata))
    header += struct.pack("<IIII", len(tensors), crc32c(directory), crc32c(metadata), 16384)
    header += bytes(124 - len(header))
    header += struct.pack("<I", crc32c(bytes(header)))
    assert len(header) == 128

    blob = bytes(header) + bytes(data) + bytes(padding) + bytes(directory) + metadata
    assert len(blob) == file_size
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(blob)
    print(f"wrote {out} ({file_size} bytes)")


if __name__ == "__main__":
    main()
