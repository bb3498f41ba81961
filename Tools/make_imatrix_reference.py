#!/usr/bin/env python3
"""Writes Tests/Fixtures/imatrix/<model>.json: the importance matrix `transformers` gives for a tiny fixture.

For each model (Tests/Fixtures/models/<model>/checkpoint) and each calibration image, the image runs through
the vision tower, the Q-Former and the language projection once; then every prompt (the caption, then the
default questions of `blip2 imatrix` as `Question: {q} Answer:`) is generated greedily with `generate`
(caption 20 new tokens, questions 10), and the language model is run once more, teacher-forced, over the
query embeddings, BOS + prompt and the generated ids but the last: the positions a KV-cache decoder computes,
each once. Forward hooks on every `nn.Linear` add up x^2 per input column and count the input rows; the head
counts only the rows whose logits generation reads (the last prompt position and each fed token). A head
tied to the token embeddings is not a stored linear weight and gets no entry, as in `blip2 imatrix`.

The file holds, per weight (its checkpoint key), the token count and the means (float64), and the ids each
prompt generated, so a disagreement in generation is told apart from one in the statistics.

Usage:  python3 Tools/make_imatrix_reference.py
Needs:  torch, transformers 5.x, safetensors, pillow (as Tools/make_fixtures.py)
"""

import json
import os
from pathlib import Path

import torch
import transformers
from PIL import Image
from safetensors import safe_open
from transformers import Blip2ForConditionalGeneration, Blip2Processor

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "Tests" / "Fixtures" / "models"
OUT = ROOT / "Tests" / "Fixtures" / "imatrix"

MODEL_NAMES = ["base-f32", "sharded-untied-f32"]
IMAGES = ["circle.png", "stripes.jpg"]
# CalibrationPrompts.defaultQuestions (Sources/Blip2Pipeline/Calibration.swift).
QUESTIONS = [
    "What is in the picture?",
    "What color is the main object?",
    "Where was this photo taken?",
    "How many people are there?",
]
CAPTION_TOKENS = 20
ANSWER_TOKENS = 10


def checkpoint_keys(folder: Path) -> set:
    keys = set()
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            keys.update(f.keys())
    return keys


class Statistics:
    """Sums of x^2 per input column (float64) and row counts, per weight key."""

    def __init__(self, model, stored: set):
        self.sums: dict = {}
        self.tokens: dict = {}
        self.enabled = False
        # Rows of the head's input to count, from the end (None: all of them).
        self.head_rows = None
        self.hooks = []
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and f"{name}.weight" in stored:
                self.hooks.append(module.register_forward_hook(self.hook(f"{name}.weight", name.endswith("lm_head"))))

    def hook(self, key: str, is_head: bool):
        def observe(module, args, output):
            if not self.enabled:
                return
            x = args[0].detach().to(torch.float64).reshape(-1, args[0].shape[-1])
            if is_head:
                assert self.head_rows is not None, "the head ran outside a teacher-forced pass"
                x = x[-self.head_rows:]
            squares = (x * x).sum(dim=0)
            if key in self.sums:
                self.sums[key] += squares
            else:
                self.sums[key] = squares
            self.tokens[key] = self.tokens.get(key, 0) + x.shape[0]
        return observe

    def remove(self):
        for hook in self.hooks:
            hook.remove()


def reference(model_name: str) -> dict:
    torch.manual_seed(0)
    checkpoint = MODELS / model_name / "checkpoint"
    processor = Blip2Processor.from_pretrained(str(checkpoint), backend="pil")
    model = Blip2ForConditionalGeneration.from_pretrained(str(checkpoint), dtype=torch.float32)
    model.eval()
    config = model.config
    nq = config.num_query_tokens
    image_id = config.image_token_index
    bos = config.text_config.bos_token_id
    tokenizer = processor.tokenizer
    stats = Statistics(model, checkpoint_keys(checkpoint))
    prompts = [None] + [f"Question: {q} Answer:" for q in QUESTIONS]
    generated = {}
    embed = model.language_model.get_input_embeddings()
    with torch.no_grad():
        for image_name in IMAGES:
            pixels = processor(images=Image.open(MODELS / "images" / image_name), return_tensors="pt")["pixel_values"]
            stats.enabled = True
            # Vision tower, Q-Former, language projection (Tools/make_fixtures.py checks it is the path generate takes).
            projected = model.get_image_features(pixel_values=pixels, return_dict=True).pooler_output
            stats.enabled = False
            runs = []
            for prompt in prompts:
                max_new = CAPTION_TOKENS if prompt is None else ANSWER_TOKENS
                prompt_ids = [bos] + (tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else [])
                input_ids = torch.tensor([[image_id] * nq + prompt_ids])
                output = model.generate(pixel_values=pixels, input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                        do_sample=False, num_beams=1, max_new_tokens=max_new)
                new_ids = output[0, input_ids.shape[1]:].tolist()
                # generate pads finished rows; a batch of one ends at its EOS.
                eos = config.text_config.eos_token_id
                if eos in new_ids:
                    new_ids = new_ids[:new_ids.index(eos) + 1]
                fed = prompt_ids + new_ids[:-1]
                embeds = torch.cat([projected, embed(torch.tensor([fed]))], dim=1)
                stats.enabled, stats.head_rows = True, len(new_ids)
                logits = model.language_model(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long)).logits
                stats.enabled, stats.head_rows = False, None
                # Teacher forcing computed what generation did: the same greedy choice at every step.
                assert logits[0, -len(new_ids):].argmax(dim=-1).tolist() == new_ids, (image_name, prompt)
                runs.append({"prompt": prompt, "prompt_ids": prompt_ids, "new_ids": new_ids})
            generated[image_name] = runs
    stats.remove()
    entries = {
        key: {"tokens": stats.tokens[key], "values": (stats.sums[key] / stats.tokens[key]).tolist()}
        for key in sorted(stats.sums)
    }
    return {
        "model": model_name,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "images": IMAGES,
        "questions": QUESTIONS,
        "caption_tokens": CAPTION_TOKENS,
        "answer_tokens": ANSWER_TOKENS,
        "generated": generated,
        "entries": entries,
    }


def main():
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    for name in MODEL_NAMES:
        result = reference(name)
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"{path.relative_to(ROOT)}: {len(result['entries'])} matrices, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
