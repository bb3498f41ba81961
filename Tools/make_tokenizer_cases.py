#!/usr/bin/env python3
"""Writes the tokenizer fixtures under Tests/Fixtures/tokenizer/ from the reference implementation.

Reference: `transformers` 5.x (`AutoTokenizer` -> `GPT2Tokenizer` backed by `tokenizers`) loaded from the
OPT tokenizer files in the shared folder, with `<image>` added exactly as `Blip2Processor` adds it
(the processor itself is built here, so whatever it does to the tokenizer is what the fixtures record).
Two independent builds (`GPT2Tokenizer` + a manual `add_tokens`, and a bare `tokenizers.Tokenizer`) must
agree with it on every string, or the script stops.

Outputs (all small, committed):
  opt_cases.json            encode/decode cases for the real OPT files
  pretokenizer_classes.json how the GPT-2 pre-tokenization regex classifies every Unicode scalar
  tiny_folders.json         tiny Hugging Face tokenizer folders (file contents) with what transformers
                            loads from each: added tokens, special tokens, encodings, or a load error

Usage:  python3 Tools/make_tokenizer_cases.py [--shared DIR]
        (default DIR: $BLIP2_SHARED_DIR, else ../shared next to the package root)
Needs:  pip install transformers tokenizers pillow
"""

import argparse
import json
import os
import random
import sys
import tempfile
import unicodedata

import tokenizers
import transformers
from PIL import Image
from tokenizers import AddedToken as RustAddedToken
from tokenizers import Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE
from transformers import AutoTokenizer, Blip2Processor, GPT2Tokenizer
from transformers.tokenization_utils_base import AddedToken

try:
    from transformers import BlipImageProcessorPil as ImageProcessor
except ImportError:  # older layouts
    from transformers import BlipImageProcessor as ImageProcessor

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(PACKAGE_ROOT, "Tests", "Fixtures", "tokenizer")
NUM_QUERY_TOKENS = 32


def shared_dir(arg):
    if arg:
        return arg
    if os.environ.get("BLIP2_SHARED_DIR"):
        return os.environ["BLIP2_SHARED_DIR"]
    return os.path.join(os.path.dirname(PACKAGE_ROOT), "shared")


def blip2_tokenizer(folder):
    """The tokenizer exactly as a Blip2Processor holds it."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    processor = Blip2Processor(ImageProcessor(), tokenizer, num_query_tokens=NUM_QUERY_TOKENS)
    return processor, processor.tokenizer


# ---------------------------------------------------------------------------------------------------
# Byte-level helpers (GPT-2's byte <-> printable character table), used only to build decode inputs.

def bytes_to_unicode():
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


# ---------------------------------------------------------------------------------------------------
# Strings to encode

NAMED_STRINGS = [
    "", " ", "  ", "\n", "\t", "\r\n",
    "Hello", "hello world", " Hello world", "Hello world ", "  Hello   world  ",
    "a photo of", "A photo of a cat", "this is a cartoon of",
    "Question: which city is this? Answer:",
    "Question: how many cats are there? Answer: two. Question: what color are they? Answer:",
    "Question: what is in the image? Answer: a dog on a beach. Question: what breed is it? Answer:",
    "a woman sitting on the beach with a dog", " it's not a city, it's a beach\n",
    # contractions, case sensitivity of the contraction rule
    "it's", "It'S", "we'll", "WE'LL", "they're", "I've", "I'm", "he'd", "don't", "'s", "''s", "'''", "' s",
    "rock 'n' roll", "o'clock", "'tis", "y'all'd've",
    # accents, precomposed and decomposed
    "café", "cafe\u0301", "naïve résumé", "Ångström", "e\u0301\u0301", "\u0301", "Zoë's", "ﬁne", "Straße",
    "ÀÉÎÕÜ àéîõü", "Crème brûlée",
    # emoji: plain, skin tone, ZWJ families, flags, keycaps, variation selectors
    "😀", "I 😀 you", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷🇩🇪", "1️⃣", "❤️", "☕", "🐱 cat",
    # scripts
    "日本語のテキスト", "我爱北京天安门", "한국어 텍스트", "Привет, мир!", "Γειά σου Κόσμε",
    "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก", "ሰላም", "ᚠᛇᚻ",
    "mixed 日本 text", "abc日本def", "٣٤٥ Arabic-Indic digits", "१२३ देवनागरी",
    # whitespace of all kinds
    "a\nb", "a\n\nb", "a \nb", "a\n b", "a\r\nb", "a\tb", "a \t b", "a   b", "a    \n   b", "\n\n\n",
    "  leading", "trailing  ", " \n trailing mixed \n ", "a\u00a0b", "a\u2003b", "a\u3000b", "a\u2028b",
    "a\u0085b", "a\u000bb\u000cc", "a\u200bb", "a\ufeffb", "\x1c\x1d\x1e\x1f", "a\x1cb",
    "\u00a0 leading nbsp", "ends with nbsp\u00a0",
    # numbers
    "0", "1234567890", "3.14159", "1,000,000", "12345678901234567890123456789", "2024-01-01", "$100.00",
    "½ ⅓ ² ³ Ⅻ", "①②③", "x²+y²", "a1b2c3", "1st 2nd 3rd",
    # punctuation runs and symbols
    "...", "!!!???", "Hello!!!", "(a)", "[b]", "{c}", "<>", "a->b", "a=>b", "#hashtag", "@user", "http://example.com/path?x=1&y=2",
    "e-mail", "--", "—", "“quoted”", "«guillemets»", "¿Qué?", "¡Hola!", "a_b", "__init__", "~/path", "100%",
    "©®™", "→ ← ↑ ↓", "∑∫√∞", "<<<>>>", "\\", "\"", "\u0000", "\u007f", "\ufffd",
    # special token text in various positions and spacing
    "</s>", "<pad>", "<image>", "<s>", "<unk>", "<mask>", "<|endoftext|>",
    "a </s> b", "a</s>b", "</s></s>", " </s> ", "</s>hello", "hello</s>", "<pad><pad>", " <pad> ",
    "x <image> y", "<image><image>Question", "<image> Question: what? Answer:", "<image>\n<image>",
    "<s>hi</s>", "<s> hi <s>", "<unk> <mask>", "a<mask>b", "<image", "image>", "</s", "<<image>>", "< image >",
    "<IMAGE>", "</S>", "<pad></s><image><s><unk><mask>",
    # long-ish repeated material
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "ab" * 60, " " * 40 + "x", "x" + " " * 40, "!" * 50, "9" * 200, "😀" * 20,
]

LONG_PARAGRAPH = (
    "BLIP-2 bridges the modality gap with a lightweight Querying Transformer, which is pre-trained in two "
    "stages. The first stage bootstraps vision-language representation learning from a frozen image encoder. "
    "The second stage bootstraps vision-to-language generative learning from a frozen language model. "
    "It achieves state-of-the-art performance on various vision-language tasks, despite having significantly "
    "fewer trainable parameters than existing methods. For example, our model outperforms Flamingo80B by 8.7% "
    "on zero-shot VQAv2 with 54x fewer trainable parameters.\n\nWe also demonstrate the model's emerging "
    "capabilities of zero-shot image-to-text generation that can follow natural language instructions: "
    "“Explain this meme.” — it's 100% fun, isn't it?  Café déjà vu, naïve coöperation; 東京タワー and 🗼.\n"
)

RANDOM_POOL = (
    list("abcxyzABCXYZ0123456789") + [" "] * 8 + ["\n", "\t", "\r", "\u00a0", "\u3000", "\u2009", "\x0b"]
    + list("'''.,;:!?-_()[]<>/\\\"@#$%^&*~`+=|")
    + ["s", "t", "re", "ve", "m", "ll", "d", "S", "LL"]
    + ["é", "e\u0301", "\u0301", "ß", "ø", "ñ", "Ω", "Ж", "ж", "日", "本", "한", "ا", "ש", "न", "\u094d", "ि", "ก", "\u0e31"]
    + ["😀", "👍", "\U0001f3fd", "\u200d", "\ufe0f", "🇫", "🇷", "½", "²", "٣", "१", "Ⅻ", "\u200b", "\ufeff", "\x1c", "\x85"]
    + ["</s>", "<pad>", "<image>", "<s>", "<unk>", "<mask>", "<", ">", "/"]
)


def random_strings(count, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        length = rng.randint(0, 24)
        out.append("".join(rng.choice(RANDOM_POOL) for _ in range(length)))
    return out


# ---------------------------------------------------------------------------------------------------
# Independent builds used only to cross-check the reference

def gpt2_with_image(folder):
    tok = GPT2Tokenizer.from_pretrained(folder)
    tok.add_tokens([AddedToken("<image>", normalized=False, special=True)], special_tokens=True)
    return tok


def bare_tokenizers(folder):
    model = BPE.from_file(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"))
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([
        RustAddedToken("<pad>", special=True, normalized=True),
        RustAddedToken("</s>", special=True, normalized=True),
        RustAddedToken("<image>", special=True, normalized=False),
    ])
    return tok


# ---------------------------------------------------------------------------------------------------
# OPT cases

def opt_cases(folder):
    processor, tok = blip2_tokenizer(folder)
    check_gpt2 = gpt2_with_image(folder)
    check_bare = bare_tokenizers(folder)
    byte_char = bytes_to_unicode()
    vocab = tok.get_vocab()
    image_id = tok.convert_tokens_to_ids("<image>")
    assert image_id == 50265, image_id

    strings = [(f"named {i}", s) for i, s in enumerate(NAMED_STRINGS)]
    strings.append(("long paragraph", LONG_PARAGRAPH))
    strings.append(("long paragraph x3", LONG_PARAGRAPH * 3))
    strings += [(f"random {i}", s) for i, s in enumerate(random_strings(400, seed=1234))]

    encode = []
    for name, text in strings:
        with_bos = tok(text)["input_ids"]
        without = tok(text, add_special_tokens=False)["input_ids"]
        assert check_gpt2(text)["input_ids"] == with_bos, (name, text)
        assert check_bare.encode(text).ids == without, (name, text)
        assert with_bos == [2] + without, (name, text)
        decoded = tok.decode(with_bos, skip_special_tokens=True)
        encode.append({
            "name": name,
            "text": text,
            "ids": with_bos,
            "ids_no_bos": without,
            "tokens": tok.convert_ids_to_tokens(without),
            "decoded": decoded,
            "decoded_keep_special": tok.decode(with_bos, skip_special_tokens=False),
            "decoded_stripped": decoded.strip(),
        })

    # Decode cases: special ids, ids outside the tokenizer's vocabulary, split multi-byte characters.
    def byte_ids(raw):
        return [vocab[byte_char[b]] for b in raw]

    decode_lists = [
        ("specials and out-of-vocab ids", [2, 50265, 1, 0, 3, 50264, 31414, 50270, 50271, 50303, 99999]),
        ("blip2 test output", [2, 102, 693, 2828, 15, 5, 4105, 19, 10, 2335, 50118]),
        ("eos newline only", [50118]),
        ("leading space word", [5, 50118, 50118]),
        ("empty", []),
        ("only specials", [2, 1, 50265, 2]),
        ("image tokens then caption", [50265] * 4 + [2, 10, 4758, 50118]),
        ("emoji split across ids", byte_ids("😀".encode())),
        ("emoji truncated 3 of 4", byte_ids("😀".encode()[:3])),
        ("emoji truncated 2 of 4", byte_ids("😀".encode()[:2])),
        ("cjk truncated", byte_ids("日本".encode()[:5])),
        ("lone continuation bytes", byte_ids(b"\x80\x80abc\xbf")),
        ("surrogate encoding", byte_ids(b"\xed\xa0\x80")),
        ("overlong", byte_ids(b"\xc0\xaf\xe0\x80\xaf")),
        ("above U+10FFFF", byte_ids(b"\xf4\x90\x80\x80")),
        ("truncated then ascii", byte_ids(b"\xe2\x82A\xf0\x9f\x98")),
        ("invalid bytes FE FF", byte_ids(b"\xfe\xff\xc1")),
        ("split with special in between", byte_ids("é".encode()[:1]) + [2] + byte_ids("é".encode()[1:])),
        ("split with image in between", byte_ids("€".encode()[:2]) + [50265] + byte_ids("€".encode()[2:])),
        ("python strip set", byte_ids(" \u00a0\x1c\u2028caption\u3000\x85\n".encode())),
        ("zero width not stripped", byte_ids("\u200bcaption\ufeff".encode())),
    ]
    rng = random.Random(99)
    interesting_bytes = list(range(0x80, 0x100)) + [0x20, 0x41, 0x0A]
    for i in range(150):
        raw = bytes(rng.choice(interesting_bytes) for _ in range(rng.randint(1, 12)))
        decode_lists.append((f"random bytes {i}", byte_ids(raw)))
    for i in range(60):
        ids = [rng.randrange(0, 50304) for _ in range(rng.randint(1, 16))]
        decode_lists.append((f"random ids {i}", ids))

    decode = []
    for name, ids in decode_lists:
        text = tok.decode(ids, skip_special_tokens=True)
        assert check_bare.decode([i for i in ids if i < 50266], skip_special_tokens=True) == text, name
        decode.append({
            "name": name,
            "ids": ids,
            "text": text,
            "text_keep_special": tok.decode(ids, skip_special_tokens=False),
            "stripped": text.strip(),
        })

    # What the processor feeds the model when an image is given: image tokens, then BOS + prompt.
    image = Image.new("RGB", (32, 24), (120, 30, 200))
    processor_cases = []
    for prompt in ["", "a photo of", "Question: which city is this? Answer:", "<image> sneaky"]:
        ids = processor(images=image, text=prompt)["input_ids"][0]
        ids = [int(i) for i in ids]
        processor_cases.append({"prompt": prompt, "num_query_tokens": NUM_QUERY_TOKENS, "ids": ids})

    special = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
        "unk_token_id": tok.unk_token_id,
        "image_token_id": image_id,
        "len": len(tok),
        "added_tokens": [
            {"id": i, "content": t.content, "special": t.special, "lstrip": t.lstrip, "rstrip": t.rstrip,
             "normalized": t.normalized, "single_word": t.single_word}
            for i, t in sorted(tok.added_tokens_decoder.items())
        ],
        "token_for_id": {str(i): tok.convert_ids_to_tokens(i) for i in [0, 1, 2, 3, 4, 5, 50118, 50264, 50265]},
    }
    python_space = [cp for cp in range(0x110000) if not (0xD800 <= cp <= 0xDFFF) and chr(cp).isspace()]
    return {
        "generator": "Tools/make_tokenizer_cases.py",
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "unicode": unicodedata.unidata_version,
        "tokenizer": special,
        "python_isspace": python_space,
        "encode": encode,
        "decode": decode,
        "processor": processor_cases,
    }


# ---------------------------------------------------------------------------------------------------
# How the GPT-2 regex classifies each scalar, probed through the reference pre-tokenizer.
# "a" + c + c + "1" splits as: letter -> [acc, 1]; number -> [a, cc1]; whitespace -> [a, c, c, 1];
# anything else -> [a, cc, 1].

def pretokenizer_classes():
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    ranges = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        if c == " ":
            kind = "S"  # the space itself attaches to what follows; it is whitespace to the regex
        else:
            pieces = [p for p, _ in pre.pre_tokenize_str("a" + c + c + "1")]
            if len(pieces) == 2:
                kind = "L" if pieces[1] == "1" else "N"
            elif len(pieces) == 4:
                kind = "S"
            elif len(pieces) == 3:
                kind = "O"
            else:
                raise RuntimeError(f"unexpected split for U+{cp:04X}: {pieces}")
        if ranges and ranges[-1][2] == kind and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp, kind])
    return {
        "generator": "Tools/make_tokenizer_cases.py",
        "tokenizers": tokenizers.__version__,
        "legend": {"L": "\\p{L}", "N": "\\p{N}", "S": "\\s", "O": "anything else"},
        "ranges": ranges,
    }


# ---------------------------------------------------------------------------------------------------
# Tiny folders: loading rules (added tokens, special tokens map, added_tokens.json) and BPE edge cases.

def tiny_vocab_and_merges(seed):
    """A small random BPE over a dense core alphabet, so that several merges produce the same token from
    different pairs (stale heap entries in `tokenizers`' merge loop), plus one repeated pair."""
    rng = random.Random(seed)
    byte_char = bytes_to_unicode()
    space, newline = byte_char[ord(" ")], byte_char[ord("\n")]
    core = ["a", "b", "c", "d", space]
    others = list("eghiklmnoprstwx<>/|'!12") + [newline, byte_char[0xC3], byte_char[0xA9]]
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for ch in core + others:
        vocab[ch] = len(vocab)
    merges = []

    def add(left, right):
        merges.append((left, right))
        if left + right not in vocab:
            vocab[left + right] = len(vocab)

    core_symbols = core[:]
    while len(merges) < 60:
        left, right = rng.choice(core_symbols), rng.choice(core_symbols)
        if len(left) + len(right) > 5:
            continue
        add(left, right)
        if left + right not in core_symbols:
            core_symbols.append(left + right)
    for left, right in [("<", "/"), ("s", ">"), ("<", "s"), ("o", "r"), ("w", "or"), ("d", "s"), (space, "w"),
                        ("wor", "d"), ("e", "x"), (byte_char[0xC3], byte_char[0xA9]), ("'", "s"), ("!", "!")]:
        add(left, right)
    merges.append(merges[3])  # a repeated pair: the later rank wins in `tokenizers`
    vocab["<mask>"] = len(vocab)
    return vocab, merges


def merges_text(merges, header=True, newline="\n"):
    lines = (["#version: 0.2"] if header else []) + [f"{a} {b}" for a, b in merges]
    return newline.join(lines) + newline


TINY_TEXTS = [
    "", "a", "ab", "abc", "abcd", "ddd", "a b c", "abc abc", "é", "café", "z", "zaz", "a\nb", "it's", "a!!", "12 21",
    "</s>", "<pad>", "<image>", "<mask>", "<s>", "a </s> b", "a<mask>b", "a <mask> b", " <mask> ", "b<extra>c",
    "b <extra> c", "<extra>", "hello <sep>", "ab <sep> ab", "<sep><sep>", "word", "a word b", "awordb",
    "a !", "it 's", "a ' s", "b ! ! c",
]


def tiny_folder_variants(seed):
    vocab, merges = tiny_vocab_and_merges(seed)
    ad = lambda content, **kw: {"content": content, "single_word": kw.get("single_word", False),
                                "lstrip": kw.get("lstrip", False), "rstrip": kw.get("rstrip", False),
                                "normalized": kw.get("normalized", True), "special": kw.get("special", True)}
    base_config = {"tokenizer_class": "GPT2Tokenizer", "bos_token": "</s>", "eos_token": "</s>",
                   "unk_token": "</s>", "pad_token": "<pad>", "add_bos_token": True, "errors": "replace"}
    variants = []
    variants.append(("plain string specials, merges with CRLF and no header", {
        "vocab.json": json.dumps(vocab),
        "merges.txt": merges_text(merges, header=False, newline="\r\n"),
        "tokenizer_config.json": json.dumps(base_config),
    }))
    cfg = dict(base_config)
    cfg["add_bos_token"] = False
    cfg["added_tokens_decoder"] = {
        "1": ad("<pad>"), "2": ad("</s>"),
        str(len(vocab)): ad("<mask2>", lstrip=True, rstrip=True, normalized=False),
        str(len(vocab) + 1): ad("<extra>", special=False, normalized=True),
        str(len(vocab) + 2): ad("word", special=False, single_word=True, normalized=False),
        str(len(vocab) + 3): ad("<sep>", lstrip=True, normalized=True),
    }
    variants.append(("added_tokens_decoder with strip and single-word flags", {
        "vocab.json": json.dumps(vocab),
        "merges.txt": merges_text(merges),
        "tokenizer_config.json": json.dumps(cfg),
    }))
    cfg = {"tokenizer_class": "GPT2Tokenizer", "add_bos_token": True, "add_prefix_space": True,
           "bos_token": {"content": "<s>", "lstrip": False, "rstrip": False, "normalized": True, "single_word": False,
                         "__type": "AddedToken"}}
    variants.append(("special_tokens_map.json and added_tokens.json, add_prefix_space", {
        "vocab.json": json.dumps(vocab),
        "merges.txt": merges_text(merges, newline="\n"),
        "tokenizer_config.json": json.dumps(cfg),
        "special_tokens_map.json": json.dumps({
            "bos_token": {"content": "</s>", "lstrip": False, "rstrip": False, "normalized": True, "single_word": False},
            "eos_token": "</s>", "unk_token": "</s>", "pad_token": "<pad>", "mask_token": {
                "content": "<mask>", "lstrip": True, "rstrip": False, "normalized": False, "single_word": False},
            "additional_special_tokens": ["<sep>"],
        }),
        "added_tokens.json": json.dumps({"<extra>": len(vocab), "<sep>": len(vocab) + 1}),
    }))
    cfg = dict(base_config)
    cfg["image_token"] = "<image>"
    cfg["extra_special_tokens"] = ["<sep>"]
    variants.append(("image_token key and extra_special_tokens", {
        "vocab.json": json.dumps(vocab),
        "merges.txt": merges_text(merges),
        "tokenizer_config.json": json.dumps(cfg),
    }))
    cfg = dict(base_config)
    cfg["add_eos_token"] = True
    cfg["clean_up_tokenization_spaces"] = True
    variants.append(("add_eos_token, and clean_up_tokenization_spaces (ignored for BPE)", {
        "vocab.json": json.dumps(vocab),
        "merges.txt": merges_text(merges),
        "tokenizer_config.json": json.dumps(cfg),
    }))
    variants.append(("no special tokens in config: GPT-2 defaults", {
        "vocab.json": json.dumps(vocab),
        "merges.txt": merges_text(merges),
        "tokenizer_config.json": json.dumps({"tokenizer_class": "GPT2Tokenizer"}),
    }))
    # Load errors
    bad_merges = merges[:5] + [("q", "a")] + merges[5:]
    variants.append(("error: merge with a symbol missing from the vocabulary", {
        "vocab.json": json.dumps(vocab), "merges.txt": merges_text(bad_merges),
        "tokenizer_config.json": json.dumps(base_config)}))
    vocab_without_result = dict(vocab)
    missing = merges[0][0] + merges[0][1]
    del vocab_without_result[missing]
    variants.append(("error: merge whose result is missing from the vocabulary", {
        "vocab.json": json.dumps(vocab_without_result), "merges.txt": merges_text(merges),
        "tokenizer_config.json": json.dumps(base_config)}))
    variants.append(("error: empty line in merges", {
        "vocab.json": json.dumps(vocab), "merges.txt": merges_text(merges[:4]) + "\n" + merges_text(merges[4:], header=False),
        "tokenizer_config.json": json.dumps(base_config)}))
    variants.append(("error: three fields on a merge line", {
        "vocab.json": json.dumps(vocab), "merges.txt": merges_text(merges) + "a b c\n",
        "tokenizer_config.json": json.dumps(base_config)}))
    variants.append(("error: malformed vocab.json", {
        "vocab.json": json.dumps(vocab)[:-7], "merges.txt": merges_text(merges),
        "tokenizer_config.json": json.dumps(base_config)}))
    return variants


def tiny_cases():
    out = []
    rng = random.Random(7)
    pool = ["a", "b", "c", "d", "a", "b", "c", "d", "e", "s", "'", "!", "1", "2", "é", " ", " ", "\n", "z", "<mask>", "</s>", "<extra>", "<sep>",
            "word", "<image>", "<s>"]
    for seed in (11, 12):
        for name, files in tiny_folder_variants(seed):
            with tempfile.TemporaryDirectory() as folder:
                for file_name, content in files.items():
                    with open(os.path.join(folder, file_name), "w", encoding="utf-8", newline="") as handle:
                        handle.write(content)
                case = {"name": f"{name} (seed {seed})", "files": files}
                try:
                    processor, tok = blip2_tokenizer(folder)
                except Exception as error:  # noqa: BLE001 - the reference's refusal is the expectation
                    case["error"] = f"{type(error).__name__}: {error}"
                    out.append(case)
                    continue
                texts = TINY_TEXTS + ["".join(rng.choice(pool) for _ in range(rng.randint(1, 14))) for _ in range(60)]
                vocab = tok.get_vocab()
                decode_ids = [sorted(vocab.values())[:12], [rng.randrange(0, len(tok) + 3) for _ in range(20)]]
                case.update({
                    "image_token_id": tok.convert_tokens_to_ids(str(processor.image_token)),
                    "image_token": str(processor.image_token),
                    "bos_token": tok.bos_token, "eos_token": tok.eos_token, "pad_token": tok.pad_token,
                    "unk_token": tok.unk_token, "add_bos_token": tok.add_bos_token, "len": len(tok),
                    "added_tokens": [
                        {"id": i, "content": t.content, "special": t.special, "lstrip": t.lstrip, "rstrip": t.rstrip,
                         "normalized": t.normalized, "single_word": t.single_word}
                        for i, t in sorted(tok.added_tokens_decoder.items())
                    ],
                    "encode": [{"text": t, "ids": tok(t)["input_ids"], "ids_no_specials": tok(t, add_special_tokens=False)["input_ids"],
                                "decoded": tok.decode(tok(t)["input_ids"], skip_special_tokens=True)}
                               for t in texts],
                    "decode": [{"ids": ids, "text": tok.decode(ids, skip_special_tokens=True),
                                "text_keep_special": tok.decode(ids, skip_special_tokens=False)} for ids in decode_ids],
                })
                out.append(case)
    return {"generator": "Tools/make_tokenizer_cases.py", "transformers": transformers.__version__, "folders": out}


def write(name, payload):
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, name)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, ensure_ascii=False, indent=None, separators=(",", ":"))
        handle.write("\n")
    print(f"wrote {os.path.relpath(path, PACKAGE_ROOT)} ({os.path.getsize(path):,} bytes)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", help="folder holding tokenizers/opt (default: $BLIP2_SHARED_DIR or ../shared)")
    args = parser.parse_args()
    folder = os.path.join(shared_dir(args.shared), "tokenizers", "opt")
    if not os.path.isfile(os.path.join(folder, "vocab.json")):
        sys.exit(f"error: no OPT tokenizer files in {folder}; pass --shared DIR or set BLIP2_SHARED_DIR")
    transformers.logging.set_verbosity_error()
    write("opt_cases.json", opt_cases(folder))
    write("pretokenizer_classes.json", pretokenizer_classes())
    write("tiny_folders.json", tiny_cases())


if __name__ == "__main__":
    main()
