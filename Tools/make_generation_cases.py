#!/usr/bin/env python3
"""Writes Tests/Fixtures/generation/cases.json: decoding results of `transformers`' own `generate`.

The language model is a toy whose next-token logits are a row of a fixed table, chosen by the last two
tokens and the sequence length, so the Swift tests can rebuild it exactly (same float32 values, same row
rule) as a `DecoderState` and compare `Blip2Generation.Generator` with `GenerationMixin.generate` on:
greedy search, min_new_tokens, repetition_penalty (> 1 and < 1), no_repeat_ngram_size, beam search
(2..5 beams, length_penalty, early_stopping True / False / "never", num_return_sequences), EOS present or
absent, max_new_tokens 1..15, contexts of several lengths (including ids outside the vocabulary), and
sampling settings that leave a single candidate token (top_k=1, tiny top_p), which are deterministic.
Each case records the new ids of every returned sequence, beam scores (`sequences_scores`), and `steps`,
the number of decoding steps transformers ran (so when its stopping rules fired).

Row rule (`row_index`): with `a` the last id, `b` the one before it (or `vocab_size` when there is none) and
`p` the sequence length, the logits are `table[(31 * a + 17 * b + 13 * p) % table_rows]`.
Every table value is a multiple of 1/64, so it is exact in float32 and in JSON.

Each case is also run on four slightly perturbed tables (noise up to 2e-3 per logit); a case is kept only
if the ids never change, so no near-tie decides a recorded result.

Usage:  python3 Tools/make_generation_cases.py
Needs:  pip install torch transformers numpy
"""

import json
import os
import random
import sys
import warnings

import numpy as np
import torch
import transformers
from torch import nn
from transformers import GenerationConfig, GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_PATH = os.path.join(PACKAGE_ROOT, "Tests", "Fixtures", "generation", "cases.json")

VOCAB_SIZE = 24
TABLE_ROWS = 97
ROW_MULTIPLIERS = (31, 17, 13)  # last id, id before it, sequence length
PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
IMAGE_ID = 23  # stands in for BLIP-2's `<image>` placeholder ids, which sit inside the LM vocabulary
PERTURBATIONS = 4
PERTURBATION_SCALE = 2e-3


# MARK: - Toy language model


def make_table(seed):
    """Rows are shuffled, evenly spaced levels (0.5 apart, -6 .. 5.5) plus a jitter of k/64: peaky enough that
    greedy choices are never close, varied enough that beams disagree. EOS is lifted near the top in about a
    quarter of the rows so hypotheses end at many different lengths."""
    rng = np.random.default_rng(seed)
    levels = (np.arange(VOCAB_SIZE) - 12) * 0.5
    table = np.empty((TABLE_ROWS, VOCAB_SIZE), dtype=np.float64)
    for row in range(TABLE_ROWS):
        values = rng.permutation(levels) + rng.integers(0, 8, size=VOCAB_SIZE) / 64.0
        if rng.random() < 0.25:
            target = int(np.argsort(values)[-1 - rng.integers(0, 3)])
            values[EOS_ID], values[target] = values[target], values[EOS_ID]
        table[row] = values
    assert np.all(table.astype(np.float32).astype(np.float64) == table)
    return table


def row_index(sequence):
    a = sequence[-1]
    b = sequence[-2] if len(sequence) >= 2 else VOCAB_SIZE
    ma, mb, mp = ROW_MULTIPLIERS
    return (ma * a + mb * b + mp * len(sequence)) % TABLE_ROWS


class TableLMConfig(PreTrainedConfig):
    model_type = "table-lm"

    def __init__(self, vocab_size=VOCAB_SIZE, table_rows=TABLE_ROWS, **kwargs):
        self.vocab_size = vocab_size
        self.table_rows = table_rows
        super().__init__(**kwargs)


class TableLM(PreTrainedModel, GenerationMixin):
    """No KV cache: `generate` is called with use_cache=False and passes the whole sequence every step."""

    config_class = TableLMConfig

    def __init__(self, config):
        super().__init__(config)
        self.table = nn.Parameter(torch.zeros(config.table_rows, config.vocab_size), requires_grad=False)
        self.post_init()

    def _init_weights(self, module):
        pass

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        rows = [row_index(sequence) for sequence in input_ids.tolist()]
        logits = self.table[torch.tensor(rows)].unsqueeze(1)  # (batch, 1, vocab): only the last position is read
        return CausalLMOutputWithPast(logits=logits)


def make_model(table):
    model = TableLM(TableLMConfig()).eval()
    with torch.no_grad():
        model.table.copy_(torch.tensor(table, dtype=torch.float32))
    return model


# MARK: - Running transformers


EARLY_STOPPING = {"heuristic": False, "always": True, "never": "never"}


def hf_generate(model, context, options):
    config = GenerationConfig(
        max_new_tokens=options["max_new_tokens"],
        min_new_tokens=options["min_new_tokens"] or None,
        num_beams=options["num_beams"],
        length_penalty=options["length_penalty"],
        early_stopping=EARLY_STOPPING[options["early_stopping"]],
        no_repeat_ngram_size=options["no_repeat_ngram_size"],
        num_return_sequences=options["num_return_sequences"],
        do_sample=options["do_sample"],
        temperature=options["temperature"],
        top_k=options["top_k"],
        top_p=options["top_p"],
        repetition_penalty=options["repetition_penalty"],
        eos_token_id=options["eos_token_id"],
        pad_token_id=options["pad_token_id"],
        use_cache=False,
        return_dict_in_generate=True,
        output_scores=True,
    )
    torch.manual_seed(0)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model.generate(torch.tensor([context]), generation_config=config)
    eos = options["eos_token_id"]
    # One entry of `scores` per step transformers ran: when each stopping rule fired.
    steps = len(out.scores)
    results = []
    for row, sequence in enumerate(out.sequences.tolist()):
        new = sequence[len(context):]
        # Finished rows are padded; a hypothesis shorter than the longest one can only have ended with EOS.
        if eos is not None and eos in new:
            new = new[: new.index(eos) + 1]
        entry = {"tokens": new}
        if options["num_beams"] > 1:
            generated = int((out.beam_indices[row] >= 0).sum())
            assert generated == len(new), (context, options, sequence, generated)
            entry["score"] = float(out.sequences_scores[row])
        results.append(entry)
    return results, steps


def default_options(**changes):
    options = {
        "max_new_tokens": 10,
        "min_new_tokens": 0,
        "num_beams": 1,
        "length_penalty": 1.0,
        "early_stopping": "heuristic",
        "no_repeat_ngram_size": 0,
        "num_return_sequences": 1,
        "do_sample": False,
        "temperature": 1.0,
        "top_k": 50,
        "top_p": 1.0,
        "repetition_penalty": 1.0,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
    }
    for key, value in changes.items():
        assert key in options, key
        options[key] = value
    return options


# MARK: - Case lists


def blip2_like_context(rng, images, prompt_length):
    """`images` placeholder ids, BOS, then prompt ids (never EOS), as BLIP-2's generate builds input_ids."""
    prompt = [rng.choice([t for t in range(3, VOCAB_SIZE - 1)]) for _ in range(prompt_length)]
    return [IMAGE_ID] * images + [BOS_ID] + prompt


def case_plan(rng):
    plan = []

    def add(name, context, **changes):
        plan.append((name, context, default_options(**changes)))

    def context(max_prompt=6):
        return blip2_like_context(rng, rng.choice([0, 1, 2, 4]), rng.randint(0, max_prompt))

    # Greedy: lengths, EOS present/absent, unusual contexts.
    for max_new in range(1, 16):
        add(f"greedy_max{max_new}", context(), max_new_tokens=max_new)
    for i in range(8):
        add(f"greedy_no_eos_{i}", context(), max_new_tokens=rng.randint(1, 15), eos_token_id=None, pad_token_id=None)
    add("greedy_single_token_context", [BOS_ID], max_new_tokens=12)
    add("greedy_out_of_vocab_context", [30, 31, BOS_ID, 7], max_new_tokens=12, repetition_penalty=1.5,
        no_repeat_ngram_size=2)
    add("greedy_long_context", blip2_like_context(rng, 8, 12), max_new_tokens=15)
    add("greedy_pad_equals_eos", context(), max_new_tokens=15, pad_token_id=EOS_ID)

    # min_new_tokens keeps EOS away.
    for i, min_new in enumerate([1, 2, 3, 5, 8, 15]):
        add(f"greedy_min_new{min_new}", context(), max_new_tokens=15, min_new_tokens=min_new)

    # Repetition penalty, both directions, counting the context ids.
    for penalty in [1.2, 1.5, 2.0, 3.0, 0.9, 0.7, 0.5]:
        for i in range(2):
            add(f"greedy_rep{penalty}_{i}", context(), max_new_tokens=15, repetition_penalty=penalty)

    # No-repeat n-grams over the whole sequence.
    for n in [1, 2, 3, 4]:
        for i in range(3):
            add(f"greedy_ngram{n}_{i}", context(), max_new_tokens=15, no_repeat_ngram_size=n)
    add("greedy_ngram2_repeated_context", [IMAGE_ID] * 4 + [BOS_ID, 5, 6, 5, 6], max_new_tokens=15,
        no_repeat_ngram_size=2)
    add("greedy_all_processors", context(), max_new_tokens=15, min_new_tokens=4, repetition_penalty=1.4,
        no_repeat_ngram_size=2)

    # Sampling settings that leave one candidate, so transformers' RNG cannot matter.
    for i in range(4):
        add(f"sample_topk1_{i}", context(), max_new_tokens=15, do_sample=True, top_k=1,
            temperature=rng.choice([0.5, 1.0, 1.7]))
    for i in range(3):
        add(f"sample_topp_tiny_{i}", context(), max_new_tokens=15, do_sample=True, top_k=0, top_p=0.05)
    add("sample_topk1_processors", context(), max_new_tokens=15, do_sample=True, top_k=1,
        repetition_penalty=1.8, no_repeat_ngram_size=2, min_new_tokens=3)

    # Beam search grid.
    for beams in [2, 3, 4, 5]:
        for length_penalty in [0.5, 1.0, 2.0]:
            for early in ["heuristic", "always", "never"]:
                ctx = context()
                max_new = rng.randint(4, 15)
                add(f"beam{beams}_lp{length_penalty}_{early}", ctx, num_beams=beams, length_penalty=length_penalty,
                    early_stopping=early, max_new_tokens=max_new, num_return_sequences=rng.randint(1, beams))
    # The same inputs under the three early_stopping modes, all sequences returned.
    for i in range(18):
        ctx = context()
        beams = rng.choice([2, 3, 4, 5])
        length_penalty = rng.choice([0.0, 0.5, 1.0, 1.5, 2.0, -0.5])
        max_new = rng.randint(6, 15)
        for early in ["heuristic", "always", "never"]:
            add(f"beam_modes{i}_{early}", ctx, num_beams=beams, length_penalty=length_penalty, early_stopping=early,
                max_new_tokens=max_new, num_return_sequences=beams)
    # "never" with a length penalty <= 0 falls back to the current length, like the heuristic.
    for i in range(8):
        beams = rng.choice([2, 3, 4, 5])
        add(f"beam_never_nonpositive_lp_{i}", context(), num_beams=beams, length_penalty=rng.choice([-2.0, -1.0, -0.5, 0.0]),
            early_stopping="never", max_new_tokens=rng.randint(6, 15), num_return_sequences=beams)
    # Lengths and EOS absence.
    for max_new in range(1, 16):
        add(f"beam3_max{max_new}", context(), num_beams=3, max_new_tokens=max_new, num_return_sequences=3)
    for i in range(6):
        beams = rng.choice([2, 3, 4, 5])
        add(f"beam_no_eos_{i}", context(), num_beams=beams, max_new_tokens=rng.randint(1, 15), eos_token_id=None,
            pad_token_id=None, num_return_sequences=rng.randint(1, beams),
            length_penalty=rng.choice([0.5, 1.0, 2.0]), early_stopping=rng.choice(list(EARLY_STOPPING)))
    # Beam search with processors (applied to log-probabilities there).
    for i in range(16):
        beams = rng.choice([2, 3, 4, 5])
        add(f"beam_processors_{i}", context(), num_beams=beams, max_new_tokens=rng.randint(3, 15),
            num_return_sequences=rng.randint(1, beams), length_penalty=rng.choice([0.5, 1.0, 2.0]),
            early_stopping=rng.choice(list(EARLY_STOPPING)),
            repetition_penalty=rng.choice([1.0, 1.3, 2.0, 0.8]),
            no_repeat_ngram_size=rng.choice([0, 2, 3]), min_new_tokens=rng.choice([0, 0, 2, 5]))
    add("beam_out_of_vocab_context", [30, 40, BOS_ID, 9], num_beams=4, max_new_tokens=12, num_return_sequences=4,
        repetition_penalty=1.5, no_repeat_ngram_size=2)
    return plan


# MARK: - Main


def main():
    table = make_table(seed=20250611)
    model = make_model(table)
    noise_rng = np.random.default_rng(7)
    perturbed = [
        make_model(table + noise_rng.uniform(-PERTURBATION_SCALE, PERTURBATION_SCALE, size=table.shape))
        for _ in range(PERTURBATIONS)
    ]

    rng = random.Random(1234)
    cases, rejected = [], []
    for name, context, options in case_plan(rng):
        for attempt in range(20):
            expected, steps = hf_generate(model, context, options)
            ids = [entry["tokens"] for entry in expected]
            if all([e["tokens"] for e in hf_generate(p, context, options)[0]] == ids for p in perturbed):
                cases.append({"name": name, "context": context, "options": options, "steps": steps,
                              "expected": expected})
                break
            rejected.append(name)
            # A near-tie decided this one: same settings on another context.
            context = blip2_like_context(rng, rng.choice([0, 1, 2, 4]), rng.randint(0, 6))
        else:
            sys.exit(f"no robust context found for {name}")

    fixture = {
        "generator": "Tools/make_generation_cases.py",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "vocab_size": VOCAB_SIZE,
        "table_rows": TABLE_ROWS,
        "row_multipliers": list(ROW_MULTIPLIERS),
        "absent_token": VOCAB_SIZE,
        "table": table.tolist(),
        "cases": cases,
    }
    os.makedirs(os.path.dirname(OUT_PATH), exist_ok=True)
    with open(OUT_PATH, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")
    summarize(cases, rejected)


def summarize(cases, rejected):
    beam = [c for c in cases if c["options"]["num_beams"] > 1]
    lengths = [len(e["tokens"]) for c in cases for e in c["expected"]]
    eos_ended = sum(1 for c in cases for e in c["expected"] if e["tokens"] and e["tokens"][-1] == EOS_ID
                    and c["options"]["eos_token_id"] == EOS_ID)
    print(f"{len(cases)} cases ({len(beam)} beam search), {len(lengths)} sequences, "
          f"{eos_ended} ended by EOS, lengths {min(lengths)}..{max(lengths)}; "
          f"{len(rejected)} contexts replaced for near-ties", file=sys.stderr)
    modes = {}
    for c in cases:
        if c["name"].startswith("beam_modes"):
            key = c["name"].rsplit("_", 1)[0]
            modes.setdefault(key, set()).add(json.dumps([e["tokens"] for e in c["expected"]]))
    distinct = sum(1 for v in modes.values() if len(v) > 1)
    print(f"early_stopping groups whose three modes differ: {distinct} of {len(modes)}", file=sys.stderr)
    print(f"wrote {OUT_PATH} ({os.path.getsize(OUT_PATH)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
