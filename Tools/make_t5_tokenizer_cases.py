#!/usr/bin/env python3
"""Writes the T5 (SentencePiece Unigram) tokenizer fixtures under Tests/Fixtures/tokenizer/t5/.

No T5 tokenizer can be downloaded here and no Python package on this machine ships one, so this script
makes its own: it trains small Unigram models with `sentencepiece` on a corpus it builds from the repository's
documents (pinned to one commit, so the corpus does not move with the docs), lets `transformers` turn each into
the `tokenizer.json` a `T5Tokenizer` saves (the real Precompiled charsmap, T5's pre-tokenizer, post-processor,
decoder and 100 extra ids), and records what the reference does with every test string.

Variants (each a folder with the `tokenizer.json` transformers wrote):
  nmt_nfkc        T5 as released: SentencePiece's default `nmt_nfkc` normalization (the Precompiled
                  charsmap), no byte fallback, 2000 pieces + 100 extra ids.
  byte_fallback   `identity` normalization (no normalizer at all), byte fallback on, 1000 pieces; since
                  `T5Tokenizer` always builds its model without byte fallback, the flag is switched on in the
                  saved file and the decoder replaced by the one SentencePiece converters write for byte-fallback
                  models (Replace "▁" -> " ", ByteFallback, Fuse, Strip one leading space).

  tiny            a 500-piece model whose Precompiled charsmap SentencePiece compiled from a handful of rules
                  (ligatures, full-width digits, A + ring, a rule longer than one character), byte fallback on;
                  small enough to seed the `t5-tokenizer` fuzz target (Tools/make_fuzz_corpus.py reads it).

Reference: `tokenizers.Tokenizer.from_file(tokenizer.json)` (what the file declares). For the nmt_nfkc variant,
`transformers.AutoTokenizer` on the same folder must agree on every string, or the script stops.

Outputs (committed):
  t5/<variant>/tokenizer.json, t5/<variant>/tokenizer_config.json
  t5_cases.json  encode/decode cases per variant, plus how the Precompiled normalizer alone maps each string

Usage:  python3 Tools/make_t5_tokenizer_cases.py
Needs:  pip install sentencepiece protobuf transformers tokenizers pillow
"""

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

import sentencepiece as spm
import tokenizers
import transformers
from tokenizers import Tokenizer, normalizers
from transformers import AutoTokenizer, T5Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tokenizer_cases import LONG_PARAGRAPH, NAMED_STRINGS, random_strings  # noqa: E402

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(PACKAGE_ROOT, "Tests", "Fixtures", "tokenizer")
CORPUS_COMMIT = "78bd815"
CORPUS_FILES = ["README.md", "docs/ARCHITECTURE.md", "docs/BENCH.md", "docs/DEMO.md", "docs/FORMAT.md",
                "docs/KERNELS.md", "docs/SERVER.md", "docs/WATCH.md"]

# Lines that give the models some pieces beyond English prose: accents, digits, other scripts.
EXTRA_CORPUS = [
    "Café déjà vu, naïve coöperation, résumé, Ångström, Straße, Zoë, Crème brûlée, señor, über, garçon.",
    "東京タワー 日本語のテキスト 我爱北京天安门 한국어 텍스트 Привет, мир! Γειά σου Κόσμε",
    "0 1 2 3 4 5 6 7 8 9 10 42 100 1000 2024 3.14159 1,000,000 $100.00 50% 1st 2nd 3rd",
    "Question: what is in the image? Answer: a dog on a beach. Question: what colour is it? Answer: brown.",
]

T5_STRINGS = [
    # compatibility characters and accents: what the Precompiled (nmt_nfkc) charsmap rewrites
    "ﬁ", "ﬁne", "ﬂour", "ﬁ\u0301", "ﬀ ﬃ ﬄ", "Å", "A\u030a", "\u212b", "Ångström", "e\u0301", "é", "cafe\u0301 café",
    "１２３", "ＡＢＣ ａｂｃ", "２０２４年", "①②③", "½", "x²", "™", "…", "‥", "Ⅻ", "ｶﾞ", "ｶ\uff9e", "㍻", "㎏", "ℌ",
    "\u00a0a\u00a0", "a\u2002b\u2003c", "a\u200bb", "a\u200db", "\ufeffa", "a\u00adb", "\u3000x\u3000",
    "\x01\x02a\x7f", "a\x00b", "\r\n", "a\rb", "a\x0bb\x0cc", "a\u0085b", "a\u2028b\u2029c",
    "Ǆ ǅ ǆ", "ẛ̣", "ᾅ", "\u0344", "\u0958", "\u2126", "\uf900", "ﬀi", "ﬁ\u0308", "a\u0301\u0301", "\u0301a",
    # digits and numbers
    "0", "12", "2024", "3.14159", "1,000,000", "$100.00", "1st 2nd 3rd", "9" * 40, "٣٤٥", "१२३",
    # extra ids and the other special tokens
    "<extra_id_0>", "<extra_id_99>", "<extra_id_100>", "<extra_id_1><extra_id_2>", "a <extra_id_0> b",
    "a<extra_id_0>b", " <extra_id_0> ", "The <extra_id_0> walks in <extra_id_1> park", "<extra_id_0", "extra_id_0>",
    "<EXTRA_ID_0>", "<extra_id_ 0>", "</s>", "a</s>b", "<pad>", "<unk>", "<s>", "<pad></s><unk>", " </s> ",
    "<0x41>", "<0xE2>", "▁", "▁▁", "a▁b", "▁a", "_a",
    # whitespace runs, tabs, newlines
    "", " ", "   ", "\t", "\n", "\n\n", " \t\n ", "a  b", "a   b", "a\tb", "a\t\tb", "a\nb", "a\n\nb", "a \n b",
    "  leading", "trailing  ", "  both  ", "a \t\n\r b", "word\u3000word", "x" + " " * 30 + "y",
    # emoji, with and without byte pieces
    "😀", "I 😀 you", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷🇩🇪", "1️⃣", "❤️", "😀😀😀", "a😀b", "😀 ",
    "日本語", "한국어", "Ελληνικά", "עברית", "नमस्ते", "क्षि", "ကြ", "กำ",
    # prompts the model sees
    "a photo of", "Question: what is in the image? Answer:", "Question: how many dogs are there? Answer: two.",
    "Question: which city is this? Answer: paris. Question: what river is it? Answer:",
]


def corpus_text():
    parts = []
    for name in CORPUS_FILES:
        parts.append(subprocess.run(["git", "-C", PACKAGE_ROOT, "show", f"{CORPUS_COMMIT}:{name}"],
                                    check=True, capture_output=True, text=True).stdout)
    return "".join(parts) + "\n".join(EXTRA_CORPUS * 3) + "\n"


# SentencePiece's rule format: source code points, a tab, target code points (hex, space-separated).
TINY_RULES = {"ﬁ": "fi", "ﬂ": "fl", "１": "1", "２": "2", "３": "3", "A\u030a": "Å", "\t": " ", "<<": "«", "ﬁx": "FIX"}


def tiny_rules_tsv(work):
    path = os.path.join(work, "tiny_rules.tsv")
    with open(path, "w", encoding="utf-8") as handle:
        for source, target in TINY_RULES.items():
            handle.write(" ".join(f"{ord(c):X}" for c in source) + "\t" + " ".join(f"{ord(c):X}" for c in target) + "\n")
    return path


def train(work, name, vocab_size, normalization, byte_fallback):
    model_prefix = os.path.join(work, name)
    rules = {"normalization_rule_tsv": tiny_rules_tsv(work)} if normalization == "tiny" else \
        {"normalization_rule_name": normalization}
    spm.SentencePieceTrainer.train(
        input=os.path.join(work, "corpus.txt"), model_prefix=model_prefix, model_type="unigram",
        vocab_size=vocab_size, byte_fallback=byte_fallback, **rules,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1, character_coverage=0.9995,
        minloglevel=2)
    folder = os.path.join(work, name + "-spm")
    os.makedirs(folder)
    shutil.copy(model_prefix + ".model", os.path.join(folder, "spiece.model"))
    return folder


def save_t5(spm_folder, out_folder, byte_fallback):
    tok = T5Tokenizer.from_pretrained(spm_folder)
    if os.path.isdir(out_folder):
        shutil.rmtree(out_folder)
    tok.save_pretrained(out_folder)
    path = os.path.join(out_folder, "tokenizer.json")
    if byte_fallback:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        data["model"]["byte_fallback"] = True
        data["decoder"] = {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ]}
    else:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    # Compact, to keep the committed fixture small (transformers writes it indented).
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False, separators=(",", ":"))
    # Only what the Swift loader reads stays: tokenizer.json and tokenizer_config.json.
    for name in os.listdir(out_folder):
        if name not in ("tokenizer.json", "tokenizer_config.json"):
            os.remove(os.path.join(out_folder, name))
    return out_folder


def cases_for(folder, check_transformers, seed, full=True):
    reference = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    checker = AutoTokenizer.from_pretrained(folder) if check_transformers else None
    vocab_size = reference.get_vocab_size(with_added_tokens=True)
    strings = [(f"t5 {i}", s) for i, s in enumerate(T5_STRINGS)]
    if full:
        strings += [(f"named {i}", s) for i, s in enumerate(NAMED_STRINGS)]
        strings.append(("long paragraph", LONG_PARAGRAPH))
        strings += [(f"random {i}", s) for i, s in enumerate(random_strings(100, seed=seed))]
    rng = random.Random(seed)
    pool = [chr(c) for c in range(0x20, 0x7F)] + list("éèàüößñÅﬁ１２①½™…😀👍🇫🇷日本한\u0301\u00a0\u3000\t\n▁") \
        + ["<extra_id_0>", "<extra_id_7>", "</s>", "<pad>", "<unk>", " ", "  "]
    for i in range(100):
        strings.append((f"random t5 {i}", "".join(rng.choice(pool) for _ in range(rng.randint(0, 30)))))

    encode = []
    for name, text in strings:
        with_eos = reference.encode(text)
        without = reference.encode(text, add_special_tokens=False)
        decoded = reference.decode(with_eos.ids, skip_special_tokens=True)
        keep = reference.decode(with_eos.ids, skip_special_tokens=False)
        if checker is not None:
            assert checker(text)["input_ids"] == with_eos.ids, (name, text)
            assert checker(text, add_special_tokens=False)["input_ids"] == without.ids, (name, text)
            assert checker.decode(with_eos.ids, skip_special_tokens=True) == decoded, (name, text)
            assert checker.decode(with_eos.ids, skip_special_tokens=False) == keep, (name, text)
        assert with_eos.ids == without.ids + [reference.token_to_id("</s>")], (name, text)
        encode.append({"name": name, "text": text, "ids": with_eos.ids, "decoded": decoded,
                       "decoded_keep_special": keep})

    byte_ids = [reference.token_to_id(f"<0x{b:02X}>") for b in range(256)]
    has_bytes = all(i is not None for i in byte_ids)
    decode_lists = [
        ("empty", []), ("specials only", [0, 1, 2]), ("pad then text then eos", [0] + encode[1]["ids"]),
        ("extra ids", [vocab_size - 1, 5, vocab_size - 2, 6, 1]), ("out of range", [vocab_size, 10 ** 6, 5]),
        ("unk inside", [5, 2, 6]),
    ]
    if has_bytes:
        for label, raw in [("emoji bytes", "😀".encode()), ("truncated emoji", "😀".encode()[:3]),
                           ("lone continuation", b"\x80abc"), ("invalid FE", b"\xfe\xff"), ("ascii bytes", b"Hi")]:
            decode_lists.append((label, [byte_ids[b] for b in raw]))
            decode_lists.append((label + " after a piece", [10] + [byte_ids[b] for b in raw] + [11]))
    for i in range(80):
        decode_lists.append((f"random ids {i}", [rng.randrange(0, vocab_size + 3) for _ in range(rng.randint(1, 12))]))
    decode = []
    for name, ids in decode_lists:
        known = [i for i in ids if i < vocab_size]
        text = reference.decode(known, skip_special_tokens=True)
        keep = reference.decode(known, skip_special_tokens=False)
        if checker is not None:
            assert checker.decode(known, skip_special_tokens=True) == text, name
            assert checker.decode(known, skip_special_tokens=False) == keep, name
        decode.append({"name": name, "ids": ids, "text": text, "text_keep_special": keep})

    return {
        "len": vocab_size,
        "eos_token_id": reference.token_to_id("</s>"),
        "pad_token_id": reference.token_to_id("<pad>"),
        "unk_token_id": reference.token_to_id("<unk>"),
        "extra_id_0": reference.token_to_id("<extra_id_0>"),
        "extra_id_99": reference.token_to_id("<extra_id_99>"),
        "encode": encode,
        "decode": decode,
    }


def legacy_metaspace_json(data):
    """The same tokenizer in the serialization older hub files use (tokenizers < 0.14): Metaspace with
    `add_prefix_space` (and `str_rep`) instead of `prepend_scheme`/`split`, no `byte_fallback` key.
    T5ParityTests makes the same rewrite."""
    data = json.loads(json.dumps(data))
    legacy = {"type": "Metaspace", "replacement": "▁", "add_prefix_space": True}
    data["pre_tokenizer"]["pretokenizers"][1] = dict(legacy, str_rep="▁")
    data["decoder"] = dict(legacy)
    del data["model"]["byte_fallback"]
    return data


def check_legacy_serialization(folder, cases):
    with open(os.path.join(folder, "tokenizer.json"), encoding="utf-8") as handle:
        legacy = Tokenizer.from_str(json.dumps(legacy_metaspace_json(json.load(handle))))
    for case in cases["encode"]:
        ids = legacy.encode(case["text"]).ids
        assert ids == case["ids"] and legacy.decode(ids) == case["decoded"], ("legacy serialization", case["name"])


def normalizer_cases(folder):
    """How the Precompiled normalizer alone maps strings (every scalar class the charsmap touches)."""
    with open(os.path.join(folder, "tokenizer.json"), encoding="utf-8") as handle:
        spec = json.load(handle)["normalizer"]
    normalizer = normalizers.Precompiled(__import__("base64").b64decode(spec["precompiled_charsmap"]))
    texts = list(T5_STRINGS)
    rng = random.Random(7)
    # Scalars from the blocks that NFKC and SentencePiece's rules rewrite, alone and after a base letter.
    blocks = [(0x00, 0x250), (0x300, 0x370), (0x1E00, 0x1F00), (0x2000, 0x2200), (0x2460, 0x2500), (0x3000, 0x3100),
              (0x3200, 0x3400), (0xF900, 0xFB50), (0xFE30, 0xFF00), (0xFF00, 0xFFF0), (0x1D400, 0x1D500)]
    for low, high in blocks:
        for start in range(low, high, 24):
            texts.append("".join(chr(c) for c in range(start, min(start + 24, high)) if not 0xD800 <= c <= 0xDFFF))
    for _ in range(150):
        texts.append("".join(chr(rng.choice([rng.randrange(0x20, 0x80), rng.randrange(0xA0, 0x3400),
                                                rng.randrange(0xF900, 0x10000), rng.randrange(0x1F300, 0x1FA00)]))
                             for _ in range(rng.randint(1, 12))))
    out = []
    for text in texts:
        if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
            continue
        out.append({"text": text, "normalized": normalizer.normalize_str(text)})
    return out


def write_json(path, payload):
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, ensure_ascii=False, indent=None, separators=(",", ":"))
        handle.write("\n")
    print(f"wrote {os.path.relpath(path, PACKAGE_ROOT)} ({os.path.getsize(path):,} bytes)")


def main():
    transformers.logging.set_verbosity_error()
    t5_dir = os.path.join(OUT_DIR, "t5")
    os.makedirs(t5_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        with open(os.path.join(work, "corpus.txt"), "w", encoding="utf-8") as handle:
            handle.write(corpus_text())
        nfkc = save_t5(train(work, "nmt_nfkc", 2000, "nmt_nfkc", False), os.path.join(t5_dir, "nmt_nfkc"), False)
        fallback = save_t5(train(work, "byte_fallback", 1000, "identity", True),
                           os.path.join(t5_dir, "byte_fallback"), True)
        tiny = save_t5(train(work, "tiny", 500, "tiny", True), os.path.join(t5_dir, "tiny"), True)
    for folder in (nfkc, fallback, tiny):
        for name in sorted(os.listdir(folder)):
            print(f"wrote {os.path.relpath(os.path.join(folder, name), PACKAGE_ROOT)} "
                  f"({os.path.getsize(os.path.join(folder, name)):,} bytes)")
    payload = {
        "generator": "Tools/make_t5_tokenizer_cases.py",
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "sentencepiece": spm.__version__,
        "variants": {
            "nmt_nfkc": cases_for(nfkc, check_transformers=True, seed=11),
            "byte_fallback": cases_for(fallback, check_transformers=False, seed=12),
            "tiny": cases_for(tiny, check_transformers=False, seed=13, full=False),
        },
        "precompiled": normalizer_cases(nfkc),
    }
    check_legacy_serialization(nfkc, payload["variants"]["nmt_nfkc"])
    write_json(os.path.join(OUT_DIR, "t5_cases.json"), payload)


if __name__ == "__main__":
    main()
