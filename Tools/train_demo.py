#!/usr/bin/env python3
"""Train the small demo BLIP-2-OPT on procedural scenes and save it as a Hugging Face checkpoint.

The model that Models/demo-q8.blip2 is converted from. It learns to caption the scenes of
Tools/scenes.py ("a large red circle to the left of a small blue square") and to answer the
scenes' questions in BLIP-2's `Question: {q} Answer:` form, chat turns included. Everything is
trained from scratch on CPU: the vision transformer, the Q-Former, the projection, a small OPT
and its own byte-level BPE tokenizer.

The output folder holds exactly the files a real BLIP-2 checkpoint has (config.json,
generation_config.json, model.safetensors, preprocessor_config.json, processor_config.json,
vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json, added_tokens.json) and
loads with Blip2ForConditionalGeneration / Blip2Processor. After training, the saved folder is
reloaded and measured on held-out scenes (a different seed) with transformers' generate; the
numbers are written to OUTPUT.report.json (beside the folder).

  python3 Tools/train_demo.py /work/demo-checkpoint                # full run (~25 min on 1 core)
  python3 Tools/train_demo.py /tmp/probe --steps 20 --eval-count 20  # smoke test
  python3 Tools/train_demo.py /work/demo-checkpoint --evaluate-only  # re-measure a saved folder

Deterministic: seeded scenes, seeded weights, torch.use_deterministic_algorithms, a fixed
number of steps and single-threaded torch by default (--threads). The same versions of torch
and transformers give the same weights on the same kind of CPU; another instruction set
(AVX-512 against AVX2) rounds differently from the first steps on, so its weights differ.
--max-minutes is a safety stop only: a run it cuts short says so and is no longer
reproducible; on a busy machine pass --max-minutes 0.

Needs: python3 with torch, transformers (5.x), tokenizers, safetensors, numpy, pillow.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import transformers  # noqa: E402
from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scenes  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

TRAIN_SEED = 1       # scene seed for training images (and the tokenizer corpus)
EVAL_SEED = 2        # held-out scenes for the report written after training
WEIGHTS_SEED = 1234  # torch seed for initial weights and task sampling

# ---------------------------------------------------------------------------------------------
# Tokenizer (OPT's layout: fairseq/RoBERTa order, GPT-2 byte-level BPE, <image> added last)
# ---------------------------------------------------------------------------------------------

LEADING_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
MASK_TOKEN = "<mask>"
IMAGE_TOKEN = "<image>"
VOCAB_ENTRIES = 512           # at most this many vocab.json entries: specials, 256 byte symbols, merges, <mask>
LM_VOCAB_ROWS = 576           # tokenizer + <image>, padded to a multiple of 64 like the hub model
NEWLINE_SYMBOL = "\u010a"     # byte-level symbol of "\n": the EOS, as 50118 is for blip2-opt-2.7b
BOS_ID, PAD_ID = 2, 1


def train_tokenizer() -> tuple[dict[str, int], list[tuple[str, str]]]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    corpus = scenes.text_corpus(TRAIN_SEED, 4000)
    # Words the scenes never use still tokenize (byte fallback); a little generic text gives
    # common prompt words ("a photo of", "this is") their own tokens.
    corpus += ["a photo of", "this is a picture of", "what is in the picture?", "what is this?",
               "is there a circle?", "yes", "no", "Hello, world!"] * 20
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_ENTRIES - 1, min_frequency=2, special_tokens=LEADING_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    vocab = dict(sorted(model["vocab"].items(), key=lambda item: item[1]))
    vocab[MASK_TOKEN] = len(vocab)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    for index, token in enumerate(LEADING_SPECIALS):
        assert vocab[token] == index, (token, vocab[token])
    assert NEWLINE_SYMBOL in vocab
    return vocab, merges


def write_tokenizer_files(folder: Path, vocab: dict[str, int], merges: list[tuple[str, str]]) -> None:
    image_id = len(vocab)

    def added(content: str, normalized: bool, special: bool = True) -> dict:
        entry = {"content": content, "lstrip": False, "normalized": normalized, "rstrip": False,
                 "single_word": False}
        return entry | {"special": special} if special is not None else entry

    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    write_json(folder / "tokenizer_config.json", {
        "add_bos_token": True, "add_prefix_space": False,
        "added_tokens_decoder": {"1": added("<pad>", True), "2": added("</s>", True),
                                 str(image_id): added(IMAGE_TOKEN, False)},
        "bos_token": "</s>", "eos_token": "</s>", "errors": "replace", "pad_token": "<pad>",
        "processor_class": "Blip2Processor", "tokenizer_class": "GPT2Tokenizer", "unk_token": "</s>",
    })
    plain = {k: v for k, v in added("", True).items() if k != "special"}
    write_json(folder / "special_tokens_map.json", {
        "bos_token": plain | {"content": "</s>"}, "eos_token": plain | {"content": "</s>"},
        "pad_token": plain | {"content": "<pad>"}, "unk_token": plain | {"content": "</s>"},
    })
    write_json(folder / "added_tokens.json", {IMAGE_TOKEN: image_id})


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------

IMAGE_SIZE = 112          # 7 x 7 patches of 16, the grid scenes.py centres objects on
PATCH_SIZE = 16
NUM_QUERY_TOKENS = 16
MAX_POSITIONS = 512       # DESIGN's chat context; only the first ~100 positions see training


def build_config(newline_id: int, image_id: int) -> Blip2Config:
    vision = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                  image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, qkv_bias=True, layer_norm_eps=1e-6,
                  attention_dropout=0.0)
    qformer = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                   cross_attention_frequency=1, encoder_hidden_size=128,
                   hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    text = dict(model_type="opt", vocab_size=LM_VOCAB_ROWS, hidden_size=128, word_embed_proj_dim=128,
                ffn_dim=512, num_hidden_layers=3, num_attention_heads=4,
                max_position_embeddings=MAX_POSITIONS, bos_token_id=BOS_ID, pad_token_id=PAD_ID,
                eos_token_id=newline_id, tie_word_embeddings=True, dropout=0.0, attention_dropout=0.0)
    return Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text,
                       num_query_tokens=NUM_QUERY_TOKENS, image_token_index=image_id)


def initialise(model: Blip2ForConditionalGeneration) -> None:
    """Weights scaled for these widths, not for the 768-2560 of the real towers.

    transformers initialises matrices with N(0, 0.02) (N(0, 1e-10) in the vision tower), tuned
    for wide layers or for loading trained weights. At width 128
    that makes every attention logit nearly zero, and attention that starts uniform learns to
    select very slowly (the query and key gradients are proportional to each other's tiny
    weights): the Q-Former never learnt to look at individual objects within the budget. So
    matrices get N(0, 1/sqrt(fan_in)), halved on branches that add into a residual stream.
    """
    residual_outputs = ("self_attn.projection.weight", "mlp.fc2.weight", "self_attn.out_proj.weight",
                        "fc2.weight")
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear):
                gain = 0.5 if f"{name}.weight".endswith(residual_outputs) and "qformer" not in name else 1.0
                module.weight.normal_(0.0, gain / math.sqrt(module.in_features))
                if module.bias is not None:
                    module.bias.zero_()
        embeddings = model.vision_model.embeddings
        # The vision config's initializer_range is 1e-10 (BLIP-2 always started from a trained
        # EVA ViT), which leaves the patch projection at zero.
        patch = embeddings.patch_embedding
        patch.weight.normal_(0.0, 1.0 / math.sqrt(patch.weight[0].numel()))
        patch.bias.zero_()
        # Position must be visible beside the patch content from the start ("on the left").
        embeddings.position_embedding.normal_(0.0, 0.2)
        embeddings.class_embedding.normal_(0.0, 0.2)
        # Zero query tokens are all equal and stay equal under gradient descent (the Q-Former
        # treats them symmetrically); BLIP-2's pre-training drew them from N(0, 0.02).
        model.query_tokens.normal_(0.0, 0.02)
        embed = model.language_model.get_input_embeddings().weight
        embed[PAD_ID].zero_()  # fairseq keeps the padding row at zero


def preprocessor_config() -> dict:
    """As published for Salesforce/blip2-opt-2.7b, at this model's image size."""
    return {
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "BlipImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "processor_class": "Blip2Processor", "resample": 3, "rescale_factor": 0.00392156862745098,
        "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    }


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------

class Encoder:
    """Text to ids exactly as Blip2Processor's tokenizer does it (loaded from the written files)."""

    def __init__(self, folder: Path):
        from transformers import AutoTokenizer
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.newline_id = self.tokenizer.convert_tokens_to_ids(NEWLINE_SYMBOL)
        self.cache: dict[str, list[int]] = {}

    def prompt(self, text: str) -> list[int]:
        """BOS + text (BOS alone for captioning)."""
        if text not in self.cache:
            self.cache[text] = self.tokenizer(text)["input_ids"] if text else [BOS_ID]
        return self.cache[text]

    def target(self, text: str) -> list[int]:
        """What the model must write: the text, then EOS (the newline token)."""
        key = "\0" + text
        if key not in self.cache:
            self.cache[key] = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.newline_id]
        return self.cache[key]


QUESTIONS_PER_IMAGE = 2
CHAT_SHARE = 0.25


def text_examples(scene: scenes.Scene, rng: random.Random) -> list[tuple[str, str]]:
    """(prompt, target) pairs for one image: the caption and two of its questions, some as chat turns.

    The language model costs more per step than the vision tower here, so more images with fewer
    sequences each teach the vision side faster.
    """
    examples = [("", scene.caption)]
    for q in rng.sample(scene.questions, QUESTIONS_PER_IMAGE):
        others = [o for o in scene.questions if o is not q]
        if rng.random() < CHAT_SHARE:
            history = [(o.question, o.answer) for o in rng.sample(others, rng.randint(1, 2))]
            examples.append((scenes.chat_prompt(history, q.question), " " + q.answer))
        else:
            examples.append((q.prompt(), " " + q.answer))
    return examples


def pixel_batch(image_processor, images) -> torch.Tensor:
    return image_processor(images, return_tensors="pt")["pixel_values"]


GRID = IMAGE_SIZE // PATCH_SIZE
assert GRID == scenes.GRID, "objects must sit on the vision tower's patch grid"
PATCH_CLASSES = {"color": ["background", *scenes.COLORS], "shape": ["background", *scenes.SHAPES],
                 "size": ["background", *scenes.SIZES]}


def patch_labels(scene: scenes.Scene) -> torch.Tensor:
    """[GRID*GRID, 3] class ids (color, shape, size) of the object that fills most of each patch.

    Read from an object mask drawn with the same geometry as the picture; a patch counts as
    that object's when the object covers at least a fifth of it, otherwise it is background.
    """
    mask = scenes.object_mask(scene, IMAGE_SIZE)
    labels = torch.zeros((GRID * GRID, 3), dtype=torch.long)
    area = PATCH_SIZE * PATCH_SIZE
    cells = mask.reshape(GRID, PATCH_SIZE, GRID, PATCH_SIZE).transpose(0, 2, 1, 3).reshape(GRID * GRID, area)
    for cell, values in enumerate(cells):
        counts = np.bincount(values, minlength=len(scene.objects) + 1)
        counts[0] = 0
        best = int(counts.argmax())
        if best and counts[best] >= area / 5:
            obj = scene.objects[best - 1]
            labels[cell] = torch.tensor([PATCH_CLASSES["color"].index(obj.color),
                                         PATCH_CLASSES["shape"].index(obj.shape),
                                         PATCH_CLASSES["size"].index(obj.size)])
    return labels


class PatchProbe(torch.nn.Module):
    """Training-only linear heads on the vision tower's patch states (not saved).

    Language-model loss alone reaches the vision tower through the Q-Former and OPT and teaches
    it slowly from scratch; telling every patch what it shows gives the tower a direct signal,
    so the whole model learns the task within a CPU budget. Object patches are few (most of an
    image is background), so they weigh more.
    """

    OBJECT_WEIGHT = 8.0

    def __init__(self, hidden: int):
        super().__init__()
        self.heads = torch.nn.ModuleList(torch.nn.Linear(hidden, len(c)) for c in PATCH_CLASSES.values())

    def loss(self, patch_states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        flat = patch_states.reshape(-1, patch_states.shape[-1])
        targets = labels.reshape(-1, labels.shape[-1])
        weights = 1.0 + (self.OBJECT_WEIGHT - 1.0) * (targets[:, 0] > 0).float()
        total = sum((F.cross_entropy(head(flat), targets[:, k], reduction="none") * weights).sum()
                    for k, head in enumerate(self.heads))
        return total / (weights.sum() * len(self.heads))


ZONE_CLASSES = {"color": ["none", *scenes.COLORS], "shape": ["none", *scenes.SHAPES],
                "size": ["none", *scenes.SIZES]}


def zone_labels(scene: scenes.Scene) -> torch.Tensor:
    """[len(ZONES), 3] class ids (color, shape, size) of the object in each zone; "none" if empty.

    Every object sits in its own zone (left, right, top, bottom, middle: scenes.py places them so).
    """
    labels = torch.zeros((len(scenes.ZONES), len(ZONE_CLASSES)), dtype=torch.long)
    for obj in scene.objects:
        labels[scenes.ZONES.index(obj.zone)] = torch.tensor(
            [ZONE_CLASSES[k].index(getattr(obj, k)) for k in ZONE_CLASSES])
    return labels


class ZoneProbe(torch.nn.Module):
    """Training-only linear heads on the first Q-Former query outputs (not saved).

    Query z is asked what stands in zone z of the picture (or that nothing does). Through OPT's
    loss alone, the Q-Former's cross-attention learns where to look far more slowly than a CPU
    budget allows; with a fixed region per query it only has to learn a spatial attention
    pattern, and the language model then reads each object's attributes from a known query.
    """

    def __init__(self, hidden: int):
        super().__init__()
        self.heads = torch.nn.ModuleList(torch.nn.Linear(hidden, len(c)) for c in ZONE_CLASSES.values())

    def loss(self, query_states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        flat = query_states[:, :len(scenes.ZONES)].reshape(-1, query_states.shape[-1])
        targets = labels.reshape(-1, labels.shape[-1])
        return sum(F.cross_entropy(head(flat), targets[:, k]) for k, head in enumerate(self.heads)) / len(self.heads)


def make_batch(indices: list[int], image_processor, encoder: Encoder, rng: random.Random):
    images, sequences, patches, zones = [], [], [], []
    for image_slot, index in enumerate(indices):
        scene = scenes.make_scene(TRAIN_SEED, index)
        images.append(scenes.render(scene))
        patches.append(patch_labels(scene))
        zones.append(zone_labels(scene))
        for prompt, target in text_examples(scene, rng):
            sequences.append((image_slot, encoder.prompt(prompt), encoder.target(target)))
    length = max(len(p) + len(t) for _, p, t in sequences)
    ids = torch.full((len(sequences), length), PAD_ID, dtype=torch.long)
    labels = torch.full((len(sequences), length), -100, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, (_, prompt, target) in enumerate(sequences):
        tokens = prompt + target
        ids[row, :len(tokens)] = torch.tensor(tokens)
        mask[row, :len(tokens)] = 1
        # Position i predicts token i+1: the labels are the target tokens, shifted left by one.
        labels[row, len(prompt) - 1:len(tokens) - 1] = torch.tensor(target)
    image_slots = torch.tensor([slot for slot, _, _ in sequences])
    return (pixel_batch(image_processor, images), image_slots, ids, mask, labels, torch.stack(patches),
            torch.stack(zones))


def losses(model, patch_probe: PatchProbe, zone_probe: ZoneProbe, pixel_values, image_slots, ids, mask, labels,
           patches, zones):
    """(language loss, patch loss, zone loss). The language part is Blip2ForConditionalGeneration.forward's
    arithmetic, except that each image is encoded once and shared by all of its text sequences."""
    features = model.get_image_features(pixel_values)
    image_embeds = features.pooler_output                                        # [images, nq, hidden]
    queries = image_embeds[image_slots]                                          # [sequences, nq, hidden]
    text_embeds = model.language_model.get_input_embeddings()(ids)
    inputs = torch.cat([queries, text_embeds], dim=1)
    attention = torch.cat([torch.ones(queries.shape[:2], dtype=mask.dtype), mask], dim=1)
    hidden = model.language_model.model(inputs_embeds=inputs, attention_mask=attention).last_hidden_state
    hidden = hidden[:, queries.shape[1]:]
    selected = labels != -100
    logits = model.language_model.lm_head(hidden[selected])
    patch_states = features.last_hidden_state[:, 1:]                             # drop the class token
    query_states = features.qformer_outputs.last_hidden_state                    # [images, nq, qformer hidden]
    return (F.cross_entropy(logits, labels[selected]), patch_probe.loss(patch_states, patches),
            zone_probe.loss(query_states, zones))


# ---------------------------------------------------------------------------------------------
# Evaluation with transformers (the saved folder, reloaded)
# ---------------------------------------------------------------------------------------------

def generate_text(model, processor, image, prompt: str | None, max_new_tokens: int) -> str:
    inputs = processor(images=image, text=prompt, return_tensors="pt") if prompt else processor(
        images=image, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens)
    new_ids = output[0, inputs["input_ids"].shape[1]:] if prompt else output[0]
    return processor.tokenizer.decode(new_ids, skip_special_tokens=True).strip()


def evaluate(folder: Path, seed: int, count: int, chat_share: float = 0.25) -> dict:
    """Greedy captions and answers on `count` held-out scenes, scored by exact match."""
    model = Blip2ForConditionalGeneration.from_pretrained(str(folder), dtype=torch.float32).eval()
    processor = Blip2Processor.from_pretrained(str(folder), backend="pil")
    rng = random.Random(f"evaluate/{seed}")
    caption_hits, hits, totals, chat_hits, chat_total = 0, {}, {}, 0, 0
    failures = []
    for index in range(count):
        scene = scenes.make_scene(seed, index)
        image = scenes.render(scene)
        caption = generate_text(model, processor, image, None, 20)
        caption_hits += caption == scene.caption
        if caption != scene.caption and len(failures) < 12:
            failures.append({"index": index, "expected": scene.caption, "got": caption})
        for q in scene.questions:
            answer = generate_text(model, processor, image, q.prompt(), 10)
            totals[q.kind] = totals.get(q.kind, 0) + 1
            hits[q.kind] = hits.get(q.kind, 0) + (answer == q.answer)
        if rng.random() < chat_share:
            first, second = rng.sample(scene.questions, 2)
            answer = generate_text(model, processor, image,
                                   scenes.chat_prompt([(first.question, first.answer)], second.question), 10)
            chat_total += 1
            chat_hits += answer == second.answer
    vqa = {kind: hits[kind] / totals[kind] for kind in scenes.QUESTION_TYPES}
    return {
        "seed": seed, "images": count,
        "caption_exact_match": caption_hits / count,
        "vqa_accuracy": vqa,
        "vqa_accuracy_mean": sum(hits.values()) / sum(totals.values()),
        "chat_second_turn_accuracy": chat_hits / chat_total if chat_total else None,
        "chat_cases": chat_total,
        "caption_failures": failures,
    }


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.03 + 0.97 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(args) -> dict:
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    torch.manual_seed(WEIGHTS_SEED)
    rng = random.Random(WEIGHTS_SEED)
    vocab, merges = train_tokenizer()
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer_folder = Path(scratch)
        write_tokenizer_files(tokenizer_folder, vocab, merges)
        encoder = Encoder(tokenizer_folder)
    config = build_config(encoder.newline_id, len(vocab))
    model = Blip2ForConditionalGeneration(config)
    initialise(model)
    model.train()
    image_processor = BlipImageProcessorPil.from_dict(preprocessor_config())

    probes = torch.nn.ModuleList([PatchProbe(config.vision_config.hidden_size),
                                  ZoneProbe(config.qformer_config.hidden_size)])
    parameters = sum(p.numel() for p in model.parameters())
    print(f"parameters: {parameters:,}; images per step {args.batch}, steps {args.steps}", file=sys.stderr)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n and n != "query_tokens"]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n
                                                               and n != "query_tokens")]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                                   {"params": no_decay + list(probes.parameters()), "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.98), eps=1e-8)
    start = time.monotonic()
    history = []
    smoothed = None
    next_index = 0
    completed = 0
    for step in range(args.steps):
        if args.max_minutes and time.monotonic() - start > args.max_minutes * 60:
            print(f"stopping at step {step}: --max-minutes {args.max_minutes} reached", file=sys.stderr)
            break
        indices = list(range(next_index, next_index + args.batch))
        next_index += args.batch
        batch = make_batch(indices, image_processor, encoder, rng)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.warmup)
        text_loss, patch_loss, zone_loss = losses(model, *probes, *batch)
        loss = text_loss + args.probe_weight * (patch_loss + zone_loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(probes.parameters()), 1.0)
        optimizer.step()
        with torch.no_grad():
            model.language_model.get_input_embeddings().weight[PAD_ID].zero_()
        completed = step + 1
        value = float(text_loss.detach())
        smoothed = value if smoothed is None else 0.95 * smoothed + 0.05 * value
        if step % 25 == 0 or step == args.steps - 1:
            elapsed = time.monotonic() - start
            history.append({"step": step, "text_loss": round(value, 4), "smoothed": round(smoothed, 4),
                            "patch_loss": round(float(patch_loss.detach()), 4),
                            "zone_loss": round(float(zone_loss.detach()), 4), "seconds": round(elapsed, 1)})
            print(f"step {step:5d}  text loss {value:.4f}  smoothed {smoothed:.4f}  "
                  f"patch loss {float(patch_loss.detach()):.4f}  zone loss {float(zone_loss.detach()):.4f}  "
                  f"{elapsed / 60:5.1f} min",
                  file=sys.stderr, flush=True)
    elapsed = time.monotonic() - start
    model.eval()
    save(model, args.output, vocab, merges)
    return {"steps_completed": completed, "steps_planned": args.steps, "images_seen": next_index,
            "train_seconds": round(elapsed, 1), "parameters": parameters, "loss_history": history,
            "cut_short": completed < args.steps}


def save(model, folder: Path, vocab, merges) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(str(folder))
    write_json(folder / "preprocessor_config.json", preprocessor_config())
    write_json(folder / "processor_config.json",
               {"num_query_tokens": NUM_QUERY_TOKENS, "processor_class": "Blip2Processor"})
    write_tokenizer_files(folder, vocab, merges)
    # The folder must load the way a user loads the hub model, with nothing missing or extra.
    _, info = Blip2ForConditionalGeneration.from_pretrained(str(folder), output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k != "error_msgs"}
    if problems or info.get("error_msgs"):
        raise RuntimeError(f"saved checkpoint does not load cleanly: {info}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="checkpoint folder to write (replaced if it exists)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=32, help="images per step (each gives 3 text sequences)")
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--probe-weight", type=float, default=1.0,
                        help="weight of the training-only patch and zone losses (0 turns them off)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--max-minutes", type=float, default=45.0, help="safety stop; 0 disables")
    parser.add_argument("--eval-count", type=int, default=300, help="held-out scenes measured after training")
    parser.add_argument("--evaluate-only", action="store_true", help="measure an existing folder")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    # Beside the folder, not in it: the folder holds exactly a hub checkpoint's files.
    report_path = args.output.with_name(args.output.name + ".report.json")
    if args.evaluate_only:
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
    else:
        report = {"training": train(args) | {"batch_images": args.batch, "lr": args.lr, "warmup": args.warmup,
                                             "probe_weight": args.probe_weight,
                                             "threads": args.threads, "train_seed": TRAIN_SEED,
                                             "weights_seed": WEIGHTS_SEED}}
    if args.eval_count:
        started = time.monotonic()
        report["held_out"] = evaluate(args.output, EVAL_SEED, args.eval_count)
        report["held_out"]["seconds"] = round(time.monotonic() - started, 1)
    report["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    write_json(report_path, report)
    print(json.dumps({k: v for k, v in report.get("held_out", {}).items() if k != "caption_failures"}, indent=2))


if __name__ == "__main__":
    main()
