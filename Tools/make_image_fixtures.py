#!/usr/bin/env python3
"""Writes the image decoding / preprocessing fixtures for Tests/Blip2ImageTests.

Needs: pillow, numpy, transformers (pip install pillow numpy transformers).
Run from the package root:  python3 Tools/make_image_fixtures.py

Writes into Tests/Fixtures/images/:
  inputs/        small procedural JPEG and PNG files of every kind the decoder must read, plus broken ones
  reference/     .npy arrays produced by the reference implementation:
                   <case>.rgb.npy      the image after transformers' convert_to_rgb (H, W, 3) uint8
                                       (only for small images; every case also has a CRC-32 in the manifest)
                   <case>.resized.npy  the processor's resize output (3, H, W) uint8, before rescaling
                   <case>.pixels.npy   the processor's pixel_values (3, H, W) float32
  manifest.json  one entry per case: file, PIL mode, size, processor settings used, reference files,
                 and for broken inputs what PIL did and which error the decoder must raise.

The reference processor is transformers' BlipImageProcessorPil (the PIL backend of BlipImageProcessor)
applied to PIL.Image.open(file). Everything is deterministic: rerunning rewrites identical files.
"""

import io
import json
import os
import struct
import sys
import zlib

import numpy as np
import PIL
from PIL import Image, ImageDraw

import transformers
from transformers.image_transforms import convert_to_rgb
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "images")
INPUTS = os.path.join(ROOT, "inputs")
REFERENCE = os.path.join(ROOT, "reference")

# Store the full decoded RGB only up to this many pixels (the CRC covers larger ones).
MAX_RGB_NPY_PIXELS = 10_000

BLIP2_SIZE = {"height": 224, "width": 224}
SMALL_SIZE = {"height": 32, "width": 48}


# ----------------------------------------------------------------------------------------------------
# Procedural content


def content(width, height, seed, gray=False, noise=8.0):
    """Gradients, hard edges, noise and text-like strokes: everything a resampler can get wrong."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    w1, h1 = max(width - 1, 1), max(height - 1, 1)
    red = 255 * x / w1
    green = 255 * y / h1
    blue = 127.5 + 127.5 * np.sin((x + 2 * y) * 0.15 + seed)
    rgb = np.stack([red, green, blue], -1)
    # hard-edged blocks
    rgb[(x // 9 + y // 7) % 5 == 0] = [250, 250, 20]
    rgb[(x > width * 0.6) & (y < height * 0.35)] = [10, 20, 200]
    rgb += rng.normal(0, noise, rgb.shape)
    image = Image.fromarray(np.clip(rgb, 0, 255).round().astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for i in range(max(3, (width + height) // 40)):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = int(rng.integers(0, width)), int(rng.integers(0, height))
        draw.line([(x0, y0), (x1, y1)], fill=(0, 0, 0) if i % 2 else (255, 255, 255), width=1 + i % 3)
    for i in range(max(1, width // 60)):
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(2, max(3, min(width, height) // 4)))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=(200, 30, 30), width=2)
    if gray:
        return image.convert("L")
    return image


def alpha_plane(width, height, seed):
    rng = np.random.default_rng(seed + 100)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    alpha = 255 * (x / max(width - 1, 1)) * (0.5 + 0.5 * np.cos(y * 0.3))
    alpha[(x // 6 + y // 6) % 4 == 0] = 0  # fully transparent holes
    alpha[(x // 6 + y // 6) % 4 == 1] = 255  # fully opaque patches
    alpha += rng.normal(0, 5, alpha.shape)
    return np.clip(alpha, 0, 255).round().astype(np.uint8)


# ----------------------------------------------------------------------------------------------------
# Raw PNG writer: full control over color type, bit depth, tRNS, interlace and chunk order.


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def pack_samples(values, bit_depth):
    """One row of samples (ints < 2**bit_depth) as PNG stores them."""
    values = np.asarray(values).reshape(-1)
    if bit_depth == 16:
        return values.astype(">u2").tobytes()
    if bit_depth == 8:
        return values.astype(np.uint8).tobytes()
    per_byte = 8 // bit_depth
    padded = np.zeros(-(-len(values) // per_byte) * per_byte, np.int64)
    padded[: len(values)] = values
    padded = padded.reshape(-1, per_byte)
    out = np.zeros(len(padded), np.int64)
    for j in range(per_byte):
        out |= padded[:, j] << (8 - bit_depth * (j + 1))
    return out.astype(np.uint8).tobytes()


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def raw_png(samples, bit_depth, color_type, extra_chunks=b"", interlace=False, idat_parts=1, after_idat=b""):
    """samples: (H, W, channels) integer array of stored sample values."""
    samples = np.asarray(samples)
    if samples.ndim == 2:
        samples = samples[..., None]
    height, width = samples.shape[:2]
    raw = bytearray()
    if interlace:
        for x0, y0, dx, dy in ADAM7:
            sub = samples[y0::dy, x0::dx]
            if sub.shape[0] == 0 or sub.shape[1] == 0:
                continue
            for row in sub:
                raw += b"\x00" + pack_samples(row, bit_depth)
    else:
        for row in samples:
            raw += b"\x00" + pack_samples(row, bit_depth)
    compressed = zlib.compress(bytes(raw), 9)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 1 if interlace else 0)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + extra_chunks
    step = -(-len(compressed) // idat_parts)
    for i in range(0, len(compressed), step):
        out += png_chunk(b"IDAT", compressed[i : i + step])
    return out + after_idat + png_chunk(b"IEND", b"")


def encode(image, fmt, **params):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------------
# Cases


def good_cases():
    """(name, file name, bytes, processor size, resample) for every image the decoder must read."""
    cases = []

    def add(name, filename, data, size=SMALL_SIZE, resample=3, pixels=False):
        """pixels: also store the float pixel values (every case stores the uint8 resize output)."""
        cases.append((name, filename, data, size, resample, pixels))

    # JPEG -------------------------------------------------------------------------------------------
    photo = content(640, 480, 1, noise=4)
    add("jpeg_baseline_640x480", "jpeg_baseline_640x480.jpg", encode(photo, "JPEG", quality=85), BLIP2_SIZE, pixels=True)
    add("jpeg_progressive_333x251", "jpeg_progressive_333x251.jpg",
        encode(content(333, 251, 2, noise=4), "JPEG", quality=80, progressive=True), pixels=True)
    add("jpeg_444_97x61", "jpeg_444_97x61.jpg", encode(content(97, 61, 3), "JPEG", quality=95, subsampling=0))
    add("jpeg_422_121x77", "jpeg_422_121x77.jpg", encode(content(121, 77, 4), "JPEG", quality=80, subsampling=1),
        {"height": 77, "width": 40})  # only the width changes
    add("jpeg_420_odd_45x31", "jpeg_420_odd_45x31.jpg", encode(content(45, 31, 5), "JPEG", quality=75, subsampling=2),
        {"height": 80, "width": 45})  # only the height changes
    add("jpeg_gray_200x150", "jpeg_gray_200x150.jpg", encode(content(200, 150, 6, gray=True), "JPEG", quality=90), pixels=True)
    add("jpeg_gray_progressive_65x33", "jpeg_gray_progressive_65x33.jpg",
        encode(content(65, 33, 7, gray=True), "JPEG", quality=88, progressive=True))
    cmyk = encode(content(160, 120, 8, noise=4).convert("CMYK"), "JPEG", quality=85)
    add("jpeg_cmyk_160x120", "jpeg_cmyk_160x120.jpg", cmyk, pixels=True)
    # The same data with the Adobe transform flag set to 2: libjpeg then reads it as YCCK.
    adobe = cmyk.find(b"Adobe")
    assert adobe > 0 and cmyk[adobe + 11] == 0
    ycck = bytearray(cmyk)
    ycck[adobe + 11] = 2
    add("jpeg_ycck_160x120", "jpeg_ycck_160x120.jpg", bytes(ycck))
    add("jpeg_cmyk_progressive_50x70", "jpeg_cmyk_progressive_50x70.jpg",
        encode(content(50, 70, 9).convert("CMYK"), "JPEG", quality=80, progressive=True))
    add("jpeg_restart_markers_150x100", "jpeg_restart_markers_150x100.jpg",
        encode(content(150, 100, 10), "JPEG", quality=85, restart_marker_rows=1))
    # 3 components, no JFIF marker, Adobe transform 0: the samples are RGB, not YCbCr.
    plain = encode(content(64, 48, 11), "JPEG", quality=90)
    assert plain[2:4] == b"\xff\xe0"
    app0_length = struct.unpack(">H", plain[4:6])[0]
    adobe_segment = b"\xff\xee" + struct.pack(">H", 14) + b"Adobe" + struct.pack(">HHHB", 100, 0, 0, 0)
    add("jpeg_adobe_rgb_64x48", "jpeg_adobe_rgb_64x48.jpg", plain[:2] + adobe_segment + plain[4 + app0_length :])
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90; the processor does not apply it
    add("jpeg_exif_orientation_80x40", "jpeg_exif_orientation_80x40.jpg",
        encode(content(80, 40, 12), "JPEG", quality=90, exif=exif.tobytes()))
    add("jpeg_1x1", "jpeg_1x1.jpg", encode(content(1, 1, 13), "JPEG", quality=90))
    add("jpeg_3x5", "jpeg_3x5.jpg", encode(content(3, 5, 14), "JPEG", quality=90))
    baseline = encode(content(120, 90, 15), "JPEG", quality=85)
    damaged = bytearray(baseline)
    middle = len(damaged) // 2
    for i in range(middle, middle + 16):
        damaged[i] ^= 0x5A
    add("jpeg_corrupt_entropy_120x90", "jpeg_corrupt_entropy_120x90.jpg", bytes(damaged))
    add("jpeg_trailing_garbage_60x40", "jpeg_trailing_garbage_60x40.jpg",
        encode(content(60, 40, 16), "JPEG", quality=85) + b"trailing bytes after the end of image")
    add("png_named_as_jpeg", "png_named_as_jpeg.jpg", encode(content(30, 20, 17), "PNG"))

    # PNG written by PIL ----------------------------------------------------------------------------
    rgba = content(150, 100, 20, noise=3).convert("RGBA")
    rgba.putalpha(Image.fromarray(alpha_plane(150, 100, 20)))
    add("png_rgba8_150x100", "png_rgba8_150x100.png", encode(rgba, "PNG"), pixels=True)
    add("png_rgb8_200x133", "png_rgb8_200x133.png", encode(content(200, 133, 21, noise=3), "PNG"))
    # every (value, alpha) pair once: checks the compositing arithmetic exhaustively
    values, alphas = np.meshgrid(np.arange(256), np.arange(256))
    exhaustive = np.stack([values, 255 - values, (values * 7) % 256, alphas], -1).astype(np.uint8)
    add("png_rgba_all_alpha_256x256", "png_rgba_all_alpha_256x256.png", encode(Image.fromarray(exhaustive, "RGBA"), "PNG"))
    la = Image.merge("LA", [content(64, 48, 22, gray=True), Image.fromarray(alpha_plane(64, 48, 22))])
    add("png_la8_64x48", "png_la8_64x48.png", encode(la, "PNG"))
    add("png_gray8_70x50", "png_gray8_70x50.png", encode(content(70, 50, 23, gray=True), "PNG"))
    add("png_1x1", "png_1x1.png", encode(content(1, 1, 24), "PNG"))
    add("png_3x5_upscaled", "png_3x5_upscaled.png", encode(content(3, 5, 25), "PNG"))
    add("png_palette8_pil_90x60", "png_palette8_pil_90x60.png",
        encode(content(90, 60, 26).quantize(200), "PNG"))
    pal_t = content(90, 60, 27).quantize(64)
    pal_t.info["transparency"] = 3
    add("png_palette8_pil_single_transparent_90x60", "png_palette8_pil_single_transparent_90x60.png",
        encode(pal_t, "PNG", transparency=3))

    # PNG written raw: every color type and bit depth ---------------------------------------------
    rng = np.random.default_rng(30)

    def gray_samples(width, height, depth, seed):
        base = np.asarray(content(width, height, seed, gray=True), np.int64)
        if depth == 16:
            return (base * 257 + rng.integers(0, 257, base.shape)).clip(0, 65535)
        return base >> (8 - depth)

    for depth, (w, h) in {1: (33, 17), 2: (37, 19), 4: (41, 21), 8: (43, 23), 16: (45, 25)}.items():
        samples = gray_samples(w, h, depth, 31 + depth)
        add(f"png_gray{depth}_{w}x{h}", f"png_gray{depth}_{w}x{h}.png", raw_png(samples, depth, 0))
        key = {1: 0, 2: 0, 4: 9, 8: int(samples[h // 2, w // 2]), 16: int(samples[h // 2, w // 2])}[depth]
        add(f"png_gray{depth}_trns_{w}x{h}", f"png_gray{depth}_trns_{w}x{h}.png",
            raw_png(samples, depth, 0, png_chunk(b"tRNS", struct.pack(">H", key))))
    # 16-bit gray: many samples below 256 (kept) and a key whose low byte matches saturated ones
    low = rng.integers(0, 600, (20, 30))
    add("png_gray16_low_values_30x20", "png_gray16_low_values_30x20.png",
        raw_png(low, 16, 0, png_chunk(b"tRNS", struct.pack(">H", 0x0130))))

    rgb16 = np.asarray(content(47, 29, 40), np.int64) * 257 + rng.integers(0, 257, (29, 47, 3))
    add("png_rgb16_47x29", "png_rgb16_47x29.png", raw_png(rgb16.clip(0, 65535), 16, 2))
    keyed = rgb16.clip(0, 65535).copy()
    keyed[5:9, 5:15] = [0x1203, 0x3404, 0x5605]  # high bytes 0x12 0x34 0x56 match the key's low bytes
    add("png_rgb16_trns_47x29", "png_rgb16_trns_47x29.png",
        raw_png(keyed, 16, 2, png_chunk(b"tRNS", struct.pack(">HHH", 0x0112, 0x0234, 0x0356))))
    rgb8 = np.asarray(content(51, 31, 41), np.int64)
    rgb8[10:20, 10:30] = [17, 34, 51]
    add("png_rgb8_trns_51x31", "png_rgb8_trns_51x31.png",
        raw_png(rgb8, 8, 2, png_chunk(b"tRNS", struct.pack(">HHH", 17, 34, 51))))
    rgba16 = np.concatenate([np.asarray(content(41, 23, 42), np.int64) * 257,
                             alpha_plane(41, 23, 42)[..., None].astype(np.int64) * 257 + 100], -1).clip(0, 65535)
    add("png_rgba16_41x23", "png_rgba16_41x23.png", raw_png(rgba16, 16, 6))
    la16 = np.stack([np.asarray(content(40, 30, 43, gray=True), np.int64) * 257 + 77,
                     alpha_plane(40, 30, 43).astype(np.int64) * 257 + 3], -1).clip(0, 65535)
    add("png_la16_40x30", "png_la16_40x30.png", raw_png(la16, 16, 4))

    palette = bytes(rng.integers(0, 256, 256 * 3).astype(np.uint8))
    for depth, (w, h) in {1: (35, 13), 2: (36, 14), 4: (37, 15), 8: (38, 16)}.items():
        entries = 1 << depth
        indices = rng.integers(0, entries, (h, w))
        plte = png_chunk(b"PLTE", palette[: 3 * entries])
        add(f"png_palette{depth}_{w}x{h}", f"png_palette{depth}_{w}x{h}.png", raw_png(indices, depth, 3, plte))
        alphas = bytes(rng.integers(0, 256, min(entries, 5)).astype(np.uint8))
        add(f"png_palette{depth}_trns_{w}x{h}", f"png_palette{depth}_trns_{w}x{h}.png",
            raw_png(indices, depth, 3, plte + png_chunk(b"tRNS", alphas)))
    # indices past the end of PLTE, and a tRNS longer than PLTE (libpng would drop it; PIL applies it)
    indices = rng.integers(0, 12, (20, 24))
    add("png_palette_short_plte_24x20", "png_palette_short_plte_24x20.png",
        raw_png(indices, 8, 3, png_chunk(b"PLTE", palette[: 3 * 6]) + png_chunk(b"tRNS", bytes([9, 200, 0, 50, 255, 128, 7, 7, 77]))))

    add("png_rgb8_interlaced_61x47", "png_rgb8_interlaced_61x47.png",
        raw_png(np.asarray(content(61, 47, 44)), 8, 2, interlace=True))
    indices = rng.integers(0, 16, (29, 53))
    add("png_palette4_interlaced_53x29", "png_palette4_interlaced_53x29.png",
        raw_png(indices, 4, 3, png_chunk(b"PLTE", palette[:48]) + png_chunk(b"tRNS", bytes(range(0, 160, 10))), interlace=True))
    add("png_gray16_interlaced_7x5", "png_gray16_interlaced_7x5.png",
        raw_png(rng.integers(0, 65536, (5, 7)), 16, 0, interlace=True))
    # gamma 1.0, text, split IDAT, chunks after IDAT: PIL ignores gamma, so must we
    add("png_gamma_text_split_idat_40x30", "png_gamma_text_split_idat_40x30.png",
        raw_png(np.asarray(content(40, 30, 45)), 8, 2,
                png_chunk(b"gAMA", struct.pack(">I", 100000)) + png_chunk(b"tEXt", b"Comment\x00procedural"),
                idat_parts=4, after_idat=png_chunk(b"tEXt", b"After\x00image")))
    # IDAT with a wrong CRC: PIL does not check image data CRCs
    good = raw_png(np.asarray(content(20, 10, 46)), 8, 2)
    idat = good.find(b"IDAT")
    length = struct.unpack(">I", good[idat - 4 : idat])[0]
    bad_crc = bytearray(good)
    bad_crc[idat + 4 + length] ^= 0xFF
    add("png_idat_bad_crc_20x10", "png_idat_bad_crc_20x10.png", bytes(bad_crc))

    # resize coverage: other filters, extreme ratios, identity
    add("jpeg_to_7x5", "jpeg_to_7x5.jpg", encode(content(320, 240, 50, noise=2), "JPEG", quality=70), {"height": 5, "width": 7})
    add("png_identity_48x32", "png_identity_48x32.png", encode(content(48, 32, 51), "PNG"))
    # Pillow 13 runs the vertical pass first when inH - outH > 2 * (inW - outW); the order changes rounding.
    tall = encode(content(40, 200, 56, noise=3), "PNG")
    add("png_vertical_first_widening_40x200", "png_vertical_first_widening_40x200.png", tall, {"height": 10, "width": 60})
    square = encode(content(100, 100, 57, noise=3), "PNG")
    add("png_pass_order_tie_100x100", "png_pass_order_tie_100x100.png", square, {"height": 60, "width": 80})
    add("png_pass_order_vertical_100x100", "png_pass_order_vertical_100x100.png", square, {"height": 59, "width": 80})
    for resample, label in [(1, "lanczos"), (2, "bilinear"), (4, "box"), (5, "hamming")]:
        add(f"png_{label}_101x67", f"png_{label}_101x67.png", encode(content(101, 67, 52 + resample, noise=3), "PNG"),
            {"height": 41, "width": 29}, resample, pixels=True)
    # aspect-preserving size forms the reference also accepts
    add("jpeg_shortest_edge_90x60", "jpeg_shortest_edge_90x60.jpg", encode(content(90, 60, 60), "JPEG"),
        {"shortest_edge": 24}, pixels=True)
    add("png_shortest_longest_edge_50x90", "png_shortest_longest_edge_50x90.png", encode(content(50, 90, 61), "PNG"),
        {"shortest_edge": 30, "longest_edge": 40}, pixels=True)
    add("png_max_height_width_70x40", "png_max_height_width_70x40.png", encode(content(70, 40, 62), "PNG"),
        {"max_height": 20, "max_width": 20}, pixels=True)
    add("jpeg_size_int_40x40", "jpeg_size_int_40x40.jpg", encode(content(40, 40, 63), "JPEG"), 17, pixels=True)
    return cases


def broken_cases():
    """(file name, bytes, expected decoder error[, known difference]) for inputs that must fail cleanly.
    A known difference marks an input PIL accepts but the decoder deliberately refuses."""
    cases = []
    baseline = encode(content(120, 90, 70), "JPEG", quality=85)
    progressive = encode(content(120, 90, 71), "JPEG", quality=85, progressive=True)
    cases.append(("jpeg_truncated_60_percent.jpg", baseline[: int(len(baseline) * 0.6)], "truncated"))
    cases.append(("jpeg_missing_eoi.jpg", baseline[:-2], "truncated"))
    cases.append(("jpeg_progressive_truncated.jpg", progressive[: int(len(progressive) * 0.7)], "truncated"))
    cases.append(("jpeg_header_only.jpg", baseline[:200], "truncated"))
    # after SOI, a reserved marker code and noise
    cases.append(("jpeg_soi_then_garbage.jpg", b"\xff\xd8\xff\x05" + bytes(np.random.default_rng(72).integers(0, 256, 500).astype(np.uint8)), "corrupt"))
    # after SOI, noise whose first "segment" claims more bytes than the file has: indistinguishable from a cut file
    cases.append(("jpeg_soi_then_long_segment.jpg", b"\xff\xd8\xff\xf3\xd6\x99" + bytes(np.random.default_rng(72).integers(0, 256, 500).astype(np.uint8)), "truncated"))
    # a Huffman table whose code counts overflow: libjpeg's fatal-error path
    dht = baseline.find(b"\xff\xc4")
    bogus = bytearray(baseline)
    for i in range(dht + 5, dht + 21):
        bogus[i] = 0xFF
    cases.append(("jpeg_bogus_huffman_table.jpg", bytes(bogus), "corrupt"))
    sof = baseline.find(b"\xff\xc0")
    twelve = bytearray(baseline)
    twelve[sof + 4] = 12
    cases.append(("jpeg_12bit_precision.jpg", bytes(twelve), "unsupportedImage"))
    two = bytearray(baseline)
    two[sof + 9] = 2
    cases.append(("jpeg_two_components.jpg", bytes(two), "unsupportedImage"))
    huge = bytearray(baseline)
    huge[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    cases.append(("jpeg_huge_header_60000x60000.jpg", bytes(huge), "tooManyPixels"))
    zero = bytearray(baseline)
    zero[sof + 5 : sof + 7] = struct.pack(">H", 0)
    cases.append(("jpeg_zero_height.jpg", bytes(zero), "corrupt"))

    # 1,500 copies of the last refinement scan of a tiny progressive JPEG: a decoding-time bomb
    tiny = encode(Image.fromarray((np.arange(64).reshape(8, 8) * 4).astype(np.uint8), "L"), "JPEG", quality=90, progressive=True)
    last_sos = tiny.rfind(b"\xff\xda")
    eoi = tiny.rfind(b"\xff\xd9")
    bomb = tiny[:eoi] + tiny[last_sos:eoi] * 1500 + b"\xff\xd9"
    cases.append(("jpeg_1500_scans.jpg", bomb, "unsupportedImage", "PIL decodes every scan; the decoder stops after 1000"))

    png = raw_png(np.asarray(content(60, 40, 73)), 8, 2)
    cases.append(("png_truncated_in_idat.png", png[: len(png) // 2], "truncated"))
    cases.append(("png_truncated_in_header.png", png[:20], "truncated"))
    bad_header = bytearray(png)
    bad_header[8 + 8 + 3] ^= 0x01  # width byte: IHDR CRC no longer matches
    cases.append(("png_bad_ihdr_crc.png", bytes(bad_header), "corrupt"))
    idat = png.find(b"IDAT")
    length = struct.unpack(">I", png[idat - 4 : idat])[0]
    data = bytearray(png[idat + 4 : idat + 4 + length])
    for i in range(2, min(len(data), 40)):
        data[i] ^= 0xA5
    bad_zlib = png[: idat - 4] + png_chunk(b"IDAT", bytes(data)) + png[idat + 8 + length :]
    cases.append(("png_corrupt_zlib.png", bad_zlib, "corrupt"))
    bit3 = raw_png(np.zeros((4, 4), np.int64), 8, 0)
    ihdr = bytearray(bit3[16:29])
    ihdr[8] = 3
    bit3 = bit3[:8] + png_chunk(b"IHDR", bytes(ihdr)) + bit3[33:]
    cases.append(("png_bit_depth_3.png", bit3, "unsupportedImage"))
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    cases.append(("png_huge_header_100000x100000.png",
                  b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b""),
                  "tooManyPixels"))
    no_plte = raw_png(np.zeros((4, 4), np.int64), 8, 3)
    # Invalid by the PNG specification. PIL renders it black; libpng refuses it, and so do we.
    cases.append(("png_palette_without_plte.png", no_plte, "corrupt", "PIL decodes it as an all-black image"))
    short_trns = raw_png(np.zeros((4, 4, 3), np.int64), 8, 2, png_chunk(b"tRNS", b"\x00\x01"))
    cases.append(("png_rgb_short_trns.png", short_trns, "corrupt"))

    other = "PIL reads this format; the decoder reads JPEG and PNG only"
    cases.append(("gif_image.gif", encode(content(20, 10, 74).quantize(16), "GIF"), "unsupportedFormat", other))
    cases.append(("bmp_image.bmp", encode(content(20, 10, 75), "BMP"), "unsupportedFormat", other))
    cases.append(("webp_image.webp", encode(content(20, 10, 76), "WEBP"), "unsupportedFormat", other))
    cases.append(("tiff_image.tif", encode(content(20, 10, 77), "TIFF"), "unsupportedFormat", other))
    cases.append(("garbage.jpg", bytes(np.random.default_rng(78).integers(0, 256, 300).astype(np.uint8)), "unrecognizedFormat"))
    cases.append(("text_named_as.png", b"This is not an image, whatever its extension says.\n", "unrecognizedFormat"))
    cases.append(("empty.png", b"", "emptyFile"))
    return cases


# ----------------------------------------------------------------------------------------------------
# Reference outputs


def processor_for(size, resample):
    return BlipImageProcessorPil(size=size, resample=resample)


def pil_verdict(path):
    try:
        with Image.open(path) as image:
            image.load()
            return "ok"
    except Exception as error:  # noqa: BLE001 - the reference's own failure, whatever its kind
        return f"{type(error).__name__}: {error}".replace(path, os.path.basename(path))


def save_npy(name, array):
    np.save(os.path.join(REFERENCE, name), array, allow_pickle=False)
    return "reference/" + name


def size_cases():
    """Output sizes the reference computes for each size form and a spread of input shapes."""
    forms = [224, [20, 30], {"height": 20, "width": 10}, {"shortest_edge": 16}, {"shortest_edge": 224},
             {"shortest_edge": 30, "longest_edge": 40}, {"shortest_edge": 224, "longest_edge": 300},
             {"max_height": 20, "max_width": 20}, {"max_height": 224, "max_width": 100}]
    shapes = [(1, 1), (3, 5), (5, 3), (640, 480), (480, 640), (17, 17), (1000, 3), (3, 1000), (333, 251), (251, 333)]
    out = []
    for form in forms:
        processor = BlipImageProcessorPil(size=form)
        for width, height in shapes:
            try:
                shape = processor(Image.new("RGB", (width, height)), return_tensors="np")["pixel_values"].shape
                out.append({"size": form, "input": [width, height], "output": [int(shape[3]), int(shape[2])]})
            except Exception as error:  # noqa: BLE001
                out.append({"size": form, "input": [width, height], "error": f"{type(error).__name__}: {error}"})
    return out


def main():
    os.makedirs(INPUTS, exist_ok=True)
    os.makedirs(REFERENCE, exist_ok=True)
    for folder in (INPUTS, REFERENCE):
        for name in os.listdir(folder):
            os.remove(os.path.join(folder, name))

    manifest = {
        "generator": "Tools/make_image_fixtures.py",
        "reference": "transformers BlipImageProcessorPil on PIL.Image.open(file)",
        "versions": {"pillow": PIL.__version__, "transformers": transformers.__version__, "numpy": np.__version__},
        "cases": [],
        "errors": [],
        "size_cases": size_cases(),
    }
    for name, filename, data, size, resample, store_pixels in good_cases():
        path = os.path.join(INPUTS, filename)
        with open(path, "wb") as handle:
            handle.write(data)
        verdict = pil_verdict(path)
        assert verdict == "ok", f"{filename}: {verdict}"
        with Image.open(path) as image:
            mode = image.mode
            rgb = convert_to_rgb(image, return_numpy=True)
        processor = processor_for(size, resample)
        with Image.open(path) as image:
            pixels = processor(image, return_tensors="np")["pixel_values"][0]
        chw = np.ascontiguousarray(np.moveaxis(rgb, -1, 0))
        resized = processor.resize(image=chw, size=processor.size, resample=processor.resample)
        assert resized.dtype == np.uint8 and pixels.dtype == np.float32
        expected = processor.normalize(processor.rescale(resized, processor.rescale_factor), processor.image_mean, processor.image_std)
        assert np.array_equal(expected, pixels), name
        entry = {
            "name": name,
            "file": "inputs/" + filename,
            "pil_mode": mode,
            "width": int(rgb.shape[1]),
            "height": int(rgb.shape[0]),
            "rgb_crc32": zlib.crc32(np.ascontiguousarray(rgb).tobytes()) & 0xFFFFFFFF,
            "processor": {"size": size, "resample": resample},
            "output_width": int(pixels.shape[2]),
            "output_height": int(pixels.shape[1]),
            "resized_npy": save_npy(f"{name}.resized.npy", resized),
        }
        if store_pixels:
            entry["pixels_npy"] = save_npy(f"{name}.pixels.npy", pixels)
        if rgb.shape[0] * rgb.shape[1] <= MAX_RGB_NPY_PIXELS:
            entry["rgb_npy"] = save_npy(f"{name}.rgb.npy", np.ascontiguousarray(rgb))
        manifest["cases"].append(entry)

    for filename, data, expected, *difference in broken_cases():
        path = os.path.join(INPUTS, filename)
        with open(path, "wb") as handle:
            handle.write(data)
        verdict = pil_verdict(path)
        assert (verdict == "ok") == bool(difference), f"{filename}: PIL says {verdict}"
        entry = {"file": "inputs/" + filename, "expect": expected, "pil": verdict}
        if difference:
            entry["known_difference"] = difference[0]
        manifest["errors"].append(entry)

    with open(os.path.join(ROOT, "manifest.json"), "w") as handle:
        json.dump(manifest, handle, indent=1)
        handle.write("\n")
    total = sum(os.path.getsize(os.path.join(d, f)) for d in (INPUTS, REFERENCE) for f in os.listdir(d))
    print(f"{len(manifest['cases'])} good cases, {len(manifest['errors'])} broken inputs, "
          f"{len(manifest['size_cases'])} size cases, {total / 1e6:.2f} MB in {ROOT}")


if __name__ == "__main__":
    sys.exit(main())
