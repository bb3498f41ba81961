#!/usr/bin/env python3
"""Answer quality of the converted demo model at every precision, against transformers.

Generates a held-out set of scenes (Tools/scenes.py, a seed the demo model never trained on),
asks transformers (fp32, the reference) and the `blip2` runtime for the greedy caption of every
image and the greedy answer to every question, and reports per variant:

  - caption exact match: the caption equals the scene's caption, word for word;
  - VQA accuracy per question type (color, shape, count, position) and over all questions;
  - chat: accuracy of the second answer of a two-question chat (`blip2 chat`);
  - agreement: the share of prompts (captions and questions) whose generated token ids equal
    transformers' ids exactly (EOS excluded), and the share whose text is equal;
  - the model file's size.

Variants are converter invocations: f32, f16, q8, q4 and mixed with the converter's default
precision policy; the super-block formats q4k, q3k, q6k and the mixed q4k-m policy; and q4, q4k,
q3k, q6k and q4k-m fitted with an importance matrix (`-imatrix` names); plus any
`--variant NAME='blip2-quantize options'` given. Output: a Markdown table on standard output and
everything (per-prompt records included) in --json. Beside each file's size, its bits per
parameter over all tensors and over the linear weights alone (what --weights sets).

Importance matrix: in a variant's options, {imatrix} stands for the file. Unless --imatrix gives
one, it is gathered once per run: --calibration-count scenes of --calibration-seed (a seed that the
evaluation never uses; it must differ from --seed) are written as PNG files, the checkpoint is
converted at --calibration-weights, and `blip2 imatrix` runs that file over the images with a
caption and questions in the scenes' own forms (--calibration-questions of each type, taken from the
calibration scenes). Seeds, questions, command and file are in the JSON report.

  swift build -c release --product blip2 && swift build -c release --product blip2-quantize
  python3 Benchmarks/quality.py /work/demo-checkpoint --bin .build/release --json quality.json
  python3 Benchmarks/quality.py CKPT --bin BIN --count 50 --variant 'q4-vision-q8=--weights q4 --override vision_model.*=q8'
  python3 Benchmarks/quality.py CKPT --bin BIN --only q4 q4-imatrix --variant 'q8-imatrix=--weights q8 --imatrix {imatrix}'

--weights-only adds, for every quantized variant, a row "NAME weights only": its file's weights written
back out at f32 (Tools/dequantize_model.py) and converted with --weights f32, so the products quantize no
activations. Its agreement is what the weight format alone costs; the rest of the variant's disagreements
come from the activations its products round (q8 or q8k blocks).

The transformers reference is cached in the work folder (keyed by checkpoint, seed and count),
so trying another variant does not recompute it. Needs python3 with torch, transformers (5.x),
numpy and Pillow, and the two executables.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PACKAGE_ROOT / "Tools"))
import scenes  # noqa: E402

IMATRIX = "{imatrix}"  # stands for the importance matrix file in a variant's options
DEFAULT_VARIANTS = {
    "f32": ["--weights", "f32"],
    "f16": ["--weights", "f16"],
    "q8": ["--weights", "q8"],
    "q4": ["--weights", "q4"],
    "mixed": ["--weights", "mixed"],
    "q4-imatrix": ["--weights", "q4", "--imatrix", IMATRIX],
}
for _weights in ("q4k", "q3k", "q6k", "q4k-m"):
    DEFAULT_VARIANTS[_weights] = ["--weights", _weights]
    DEFAULT_VARIANTS[f"{_weights}-imatrix"] = ["--weights", _weights, "--imatrix", IMATRIX]
CAPTION_TOKENS, ANSWER_TOKENS = 20, 10


# ---------------------------------------------------------------------------------------------
# Held-out set
# ---------------------------------------------------------------------------------------------

def chat_pair(scene: scenes.Scene) -> tuple[scenes.Question, scenes.Question]:
    """The two questions of the chat case: fixed per scene so every variant gets the same."""
    return scene.questions[(scene.index + 1) % 4], scene.questions[scene.index % 4]


def write_images(folder: Path, seed: int, count: int) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for index in range(count):
        scene = scenes.make_scene(seed, index)
        path = folder / f"scene-{seed}-{index:05d}.png"
        if not path.exists():
            scenes.render(scene).save(path, "PNG")
        items.append({"path": str(path), "scene": scene})
    return items


def prompts_for(items: list[dict]) -> list[dict]:
    """Every generation to run: one caption and four questions per image."""
    jobs = []
    for item in items:
        scene = item["scene"]
        jobs.append({"image": item["path"], "kind": "caption", "prompt": None, "expected": scene.caption})
        for q in scene.questions:
            jobs.append({"image": item["path"], "kind": q.kind, "question": q.question,
                         "prompt": q.prompt(), "expected": q.answer})
    return jobs


# ---------------------------------------------------------------------------------------------
# Reference: transformers fp32
# ---------------------------------------------------------------------------------------------

def trim(ids: list[int], eos: int) -> list[int]:
    """New tokens up to (not including) the first EOS."""
    return ids[:ids.index(eos)] if eos in ids else ids


def reference(checkpoint: Path, jobs: list[dict], chats: list[dict], cache: Path) -> dict:
    key = hashlib.sha256()
    for name in sorted(p.name for p in checkpoint.iterdir()):
        if name.endswith((".safetensors", ".json", ".txt")):
            key.update(name.encode() + (checkpoint / name).read_bytes())
    key.update(json.dumps([[j["image"], j["prompt"]] for j in jobs] + [[c["image"], c["questions"]]
                                                                     for c in chats]).encode())
    path = cache / f"reference-{key.hexdigest()[:16]}.json"
    if path.exists():
        return json.loads(path.read_text())

    import torch
    from PIL import Image
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    torch.set_num_threads(1)
    model = Blip2ForConditionalGeneration.from_pretrained(str(checkpoint), dtype=torch.float32).eval()
    processor = Blip2Processor.from_pretrained(str(checkpoint), backend="pil")
    eos = model.config.text_config.eos_token_id
    images: dict[str, object] = {}

    def generate(image_path: str, prompt: str | None, max_new_tokens: int) -> dict:
        if image_path not in images:
            images.clear()
            images[image_path] = Image.open(image_path).convert("RGB")
        image = images[image_path]
        inputs = processor(images=image, text=prompt, return_tensors="pt") if prompt else processor(
            images=image, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens)
        # Without a prompt generate() builds [<image> x nq, BOS] itself; either way the input ids
        # come back in front of the new tokens.
        prefix = inputs["input_ids"].shape[1] if prompt else model.config.num_query_tokens + 1
        new = out[0, prefix:].tolist()
        return {"ids": trim(new, eos), "text": processor.tokenizer.decode(new, skip_special_tokens=True).strip()}

    started = time.monotonic()
    results = []
    for number, job in enumerate(jobs):
        results.append(generate(job["image"], job["prompt"], ANSWER_TOKENS if job["prompt"] else CAPTION_TOKENS))
        if number % 200 == 0:
            print(f"transformers: {number}/{len(jobs)} prompts, {time.monotonic() - started:.0f} s",
                  file=sys.stderr, flush=True)
    chat_results = []
    for chat in chats:
        first, second = chat["questions"]
        answer = generate(chat["image"], scenes.chat_prompt([], first), ANSWER_TOKENS)
        follow = generate(chat["image"], scenes.chat_prompt([(first, answer["text"])], second), ANSWER_TOKENS)
        chat_results.append([answer, follow])
    value = {"eos": eos, "jobs": results, "chats": chat_results,
             "seconds": round(time.monotonic() - started, 1)}
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return value


# ---------------------------------------------------------------------------------------------
# The runtime
# ---------------------------------------------------------------------------------------------

def run_json_lines(command: list[str], stdin: str | None = None) -> list[dict]:
    result = subprocess.run(command, input=stdin, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed ({result.returncode}):\n{result.stderr.strip()}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def runtime(blip2: Path, model: Path, jobs: list[dict], chats: list[dict], threads: int, eos: int) -> dict:
    """Captions in one process for all images; questions grouped by their text, one process per
    distinct question (`caption --prompt` with the answer budget is exactly what `ask` runs)."""
    common = ["--json", "--threads", str(threads)]
    groups: dict[str | None, list[int]] = defaultdict(list)
    for number, job in enumerate(jobs):
        groups[job["prompt"]].append(number)
    outputs: list[dict | None] = [None] * len(jobs)
    started = time.monotonic()
    for prompt, numbers in groups.items():
        command = [str(blip2), "caption", str(model), *[jobs[n]["image"] for n in numbers], *common]
        if prompt is not None:
            command += ["--prompt", prompt, "--max-new-tokens", str(ANSWER_TOKENS)]
        records = run_json_lines(command)
        if len(records) != len(numbers):
            raise RuntimeError(f"{len(records)} JSON lines for {len(numbers)} images from {shlex.join(command[:3])}")
        for n, record in zip(numbers, records):
            outputs[n] = {"ids": trim(record["token_ids"], eos), "text": record["text"].strip(),
                          "ms": (record.get("timings_ms") or {}).get("total")}
    chat_outputs = []
    for chat in chats:
        records = run_json_lines([str(blip2), "chat", str(model), chat["image"], *common],
                                 stdin="".join(q + "\n" for q in chat["questions"]))
        chat_outputs.append([{"ids": trim(r["token_ids"], eos), "text": r["text"].strip()} for r in records])
    return {"jobs": outputs, "chats": chat_outputs, "seconds": round(time.monotonic() - started, 1)}


def convert(quantize: Path, checkpoint: Path, model: Path, options: list[str]) -> dict:
    """Runs the converter; returns its JSON report."""
    command = [str(quantize), str(checkpoint), "--output", str(model), *options, "--json"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{shlex.join(command)} failed:\n{result.stderr.strip()}")
    return json.loads(result.stdout)


def bits_per_weight(report: dict) -> dict:
    """Bits per parameter at run time (as the converter counts them) over all tensors, and over the
    linear weights alone (two-dimensional `.weight` tensors other than embeddings: what --weights sets)."""
    total = report["totals"]["total"]
    linear_bytes = linear_parameters = 0
    for tensor in report["tensors"]:
        if len(tensor["shape"]) == 2 and tensor["name"].endswith(".weight") and "embed" not in tensor["name"]:
            linear_bytes += tensor["bytes"]
            linear_parameters += math.prod(tensor["shape"])
    return {"bits_per_parameter": 8 * total["bytes"] / total["parameters"],
            "bits_per_linear_weight": 8 * linear_bytes / linear_parameters if linear_parameters else None}


def calibration_questions(items: list[dict], per_kind: int) -> list[str]:
    """Questions in the scenes' own forms for `blip2 imatrix` to ask of every calibration image: the
    first `per_kind` distinct ones of each type, walking the calibration scenes in order."""
    chosen: dict[str, list[str]] = {kind: [] for kind in scenes.QUESTION_TYPES}
    for item in items:
        for q in item["scene"].questions:
            if len(chosen[q.kind]) < per_kind and q.question not in chosen[q.kind]:
                chosen[q.kind].append(q.question)
    return [question for kind in scenes.QUESTION_TYPES for question in chosen[kind]]


def calibrate(blip2: Path, quantize: Path, checkpoint: Path, work: Path, seed: int, count: int,
              weights: str, per_kind: int, threads: int) -> dict:
    """The importance matrix: `blip2 imatrix` over calibration scenes, on a conversion of the checkpoint."""
    items = write_images(work / f"images-{seed}", seed, count)
    questions = calibration_questions(items, per_kind)
    questions_file = work / f"calibration-{seed}-questions.txt"
    questions_file.write_text("".join(q + "\n" for q in questions))
    model = work / f"calibration-{weights}.blip2"
    convert(quantize, checkpoint, model, ["--weights", weights])
    output = work / f"calibration-{seed}-{count}-{weights}.imatrix"
    command = [str(blip2), "imatrix", str(model), *[item["path"] for item in items], "--output", str(output),
               "--questions-file", str(questions_file), "--threads", str(threads)]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"blip2 imatrix failed ({result.returncode}):\n{result.stderr.strip()}")
    seconds = round(time.monotonic() - started, 1)
    print(f"importance matrix: {count} scenes of seed {seed}, {len(questions)} questions, on the {weights} file, "
          f"{seconds} s", file=sys.stderr)
    return {"file": str(output), "file_bytes": output.stat().st_size,
            "sha256": hashlib.sha256(output.read_bytes()).hexdigest(), "seed": seed, "images": count,
            "model_weights": weights, "questions": questions, "seconds": seconds,
            "command": f"blip2 imatrix {model.name} <{count} images> --output {output.name} "
                       f"--questions-file {questions_file.name} --threads {threads}"}


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------

def score(jobs: list[dict], chats: list[dict], outputs: dict, ref: dict | None) -> dict:
    hits: dict[str, int] = defaultdict(int)
    totals: dict[str, int] = defaultdict(int)
    same_ids = same_text = 0
    differing = []
    for number, (job, out) in enumerate(zip(jobs, outputs["jobs"])):
        totals[job["kind"]] += 1
        hits[job["kind"]] += out["text"] == job["expected"]
        if ref is not None:
            theirs = ref["jobs"][number]
            same_ids += out["ids"] == theirs["ids"]
            same_text += out["text"] == theirs["text"]
            if out["ids"] != theirs["ids"] and len(differing) < 20:
                differing.append({"image": Path(job["image"]).name, "prompt": job["prompt"],
                                  "ours": out["text"], "transformers": theirs["text"]})
    chat_hits = sum(len(o) == 2 and o[1]["text"] == c["expected"] for c, o in zip(chats, outputs["chats"]))
    chat_same = 0
    if ref is not None:
        chat_same = sum([a["ids"] for a in o] == [b["ids"] for b in r]
                        for o, r in zip(outputs["chats"], ref["chats"]))
    questions = [k for k in scenes.QUESTION_TYPES if totals[k]]
    result = {
        "caption_exact_match": hits["caption"] / totals["caption"],
        "vqa_accuracy": {k: hits[k] / totals[k] for k in questions},
        "vqa_accuracy_all": sum(hits[k] for k in questions) / sum(totals[k] for k in questions),
        "chat_second_answer_accuracy": chat_hits / len(chats) if chats else None,
        "prompts": len(jobs),
    }
    if ref is not None:
        result |= {"agreement_token_ids": same_ids / len(jobs), "agreement_text": same_text / len(jobs),
                   "chat_agreement": chat_same / len(chats) if chats else None,
                   "first_disagreements": differing}
    return result


def table(rows: list[tuple[str, dict, int | None]]) -> str:
    kinds = scenes.QUESTION_TYPES
    header = ["variant", "file bytes", "bits/param", "bits/linear weight", "caption EM",
              *[f"VQA {k}" for k in kinds], "VQA all", "chat 2nd",
              "ids = transformers", "text = transformers", "chat ids = transformers"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def pct(value):
        return "" if value is None else f"{100 * value:.1f}"

    for name, s, size in rows:
        bits = [s.get("bits_per_parameter"), s.get("bits_per_linear_weight")]
        cells = [name, "" if size is None else f"{size:,}", *["" if b is None else f"{b:.2f}" for b in bits],
                 pct(s["caption_exact_match"]),
                 *[pct(s["vqa_accuracy"].get(k)) for k in kinds], pct(s["vqa_accuracy_all"]),
                 pct(s["chat_second_answer_accuracy"]), pct(s.get("agreement_token_ids")),
                 pct(s.get("agreement_text")), pct(s.get("chat_agreement"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="the Hugging Face checkpoint folder (Tools/train_demo.py output)")
    parser.add_argument("--bin", type=Path, required=True, help="folder holding the blip2 and blip2-quantize executables")
    parser.add_argument("--seed", type=int, default=777, help="scene seed of the held-out set (training used 1, "
                                                              "the training report 2)")
    parser.add_argument("--count", type=int, default=300, help="images (each: 1 caption + 4 questions)")
    parser.add_argument("--chat-count", type=int, default=100, help="images that also get a two-question chat")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=OPTIONS",
                        help="extra blip2-quantize options to measure, e.g. 'q4-head-f16=--weights q4 --override ...'")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="measure only these variants")
    parser.add_argument("--threads", type=int, default=1, help="runtime threads (the results do not depend on it)")
    parser.add_argument("--imatrix", type=Path, metavar="FILE",
                        help="the importance matrix for {imatrix} in variants (default: gathered on calibration scenes)")
    parser.add_argument("--calibration-seed", type=int, default=4099,
                        help="scene seed of the calibration images (never the evaluation's --seed)")
    parser.add_argument("--calibration-count", type=int, default=64, help="calibration images")
    parser.add_argument("--calibration-questions", type=int, default=2, metavar="N",
                        help="questions of each type (color, shape, count, position) asked of every calibration image")
    parser.add_argument("--calibration-weights", default="f16",
                        help="the precision `blip2 imatrix` runs the checkpoint at (f32, f16, q8)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/blip2-quality"),
                        help="images, converted models and the cached reference")
    parser.add_argument("--weights-only", action="store_true",
                        help="also measure every quantized variant's weights alone (dequantized to f32, run with f32 products)")
    parser.add_argument("--json", type=Path, help="write every number and per-prompt output here")
    args = parser.parse_args()

    variants = dict(DEFAULT_VARIANTS)
    for text in args.variant:
        name, sep, options = text.partition("=")
        if not sep or not name:
            parser.error(f"--variant '{text}': expected NAME=OPTIONS")
        variants[name] = shlex.split(options)
    if args.only:
        unknown = set(args.only) - set(variants)
        if unknown:
            parser.error(f"unknown variant(s): {', '.join(sorted(unknown))}")
        variants = {k: v for k, v in variants.items() if k in args.only}
    if args.calibration_seed == args.seed:
        parser.error(f"--calibration-seed must differ from the evaluation's --seed ({args.seed})")
    if args.imatrix is not None and not args.imatrix.is_file():
        parser.error(f"--imatrix {args.imatrix}: no such file")
    blip2, quantize = args.bin / "blip2", args.bin / "blip2-quantize"
    for tool in (blip2, quantize):
        if not tool.exists():
            parser.error(f"{tool} not found: build it with `swift build -c release` and pass its folder to --bin")

    items = write_images(args.work / f"images-{args.seed}", args.seed, args.count)
    jobs = prompts_for(items)
    chats = []
    for item in items[:args.chat_count]:
        first, second = chat_pair(item["scene"])
        chats.append({"image": item["path"], "questions": [first.question, second.question],
                      "expected": second.answer})
    print(f"{len(items)} images, {len(jobs)} prompts, {len(chats)} chats (seed {args.seed})", file=sys.stderr)

    ref = reference(args.checkpoint, jobs, chats, args.work)
    rows = [("transformers fp32", score(jobs, chats, ref, None), None)]
    report = {"seed": args.seed, "images": len(items), "prompts": len(jobs), "chats": len(chats),
              "checkpoint": str(args.checkpoint), "reference_seconds": ref["seconds"],
              "variants": {"transformers_fp32": rows[0][1]}}
    per_prompt = {"transformers_fp32": ref}
    imatrix = None
    if any(IMATRIX in options for options in variants.values()):
        if args.imatrix is not None:
            imatrix = {"file": str(args.imatrix), "file_bytes": args.imatrix.stat().st_size,
                       "sha256": hashlib.sha256(args.imatrix.read_bytes()).hexdigest(), "given": True}
        else:
            imatrix = calibrate(blip2, quantize, args.checkpoint, args.work, args.calibration_seed,
                                args.calibration_count, args.calibration_weights, args.calibration_questions,
                                args.threads)
        report["imatrix"] = imatrix
    for name, options in variants.items():
        model = args.work / f"{name}.blip2"
        converted = convert(quantize, args.checkpoint, model,
                            [imatrix["file"] if option == IMATRIX else option for option in options])
        outputs = runtime(blip2, model, jobs, chats, args.threads, ref["eos"])
        s = score(jobs, chats, outputs, ref)
        size = model.stat().st_size
        s |= {"file_bytes": size, **bits_per_weight(converted), "converter_options": options,
              "runtime_seconds": outputs["seconds"]}
        rows.append((name, s, size))
        report["variants"][name] = s
        per_prompt[name] = outputs
        print(f"{name}: caption {s['caption_exact_match']:.3f}, VQA {s['vqa_accuracy_all']:.3f}, "
              f"ids = transformers {s['agreement_token_ids']:.4f}", file=sys.stderr, flush=True)
        stored_as = options[options.index("--weights") + 1] if "--weights" in options else None
        if args.weights_only and (stored_as not in ("f32", "f16") or "--override" in options):
            alone = f"{name} weights only"
            folder = args.work / f"{name}-dequantized"
            subprocess.run([sys.executable, str(PACKAGE_ROOT / "Tools" / "dequantize_model.py"), str(model),
                            str(args.checkpoint), str(folder)], check=True, capture_output=True)
            dequantized = args.work / f"{name}-dequantized.blip2"
            convert(quantize, folder, dequantized, ["--weights", "f32"])
            outputs = runtime(blip2, dequantized, jobs, chats, args.threads, ref["eos"])
            s = score(jobs, chats, outputs, ref) | {"runtime_seconds": outputs["seconds"], "weights_of": name}
            rows.append((alone, s, None))
            report["variants"][alone] = s
            per_prompt[alone] = outputs
            print(f"{alone}: ids = transformers {s['agreement_token_ids']:.4f}", file=sys.stderr, flush=True)

    print(table(rows))
    if args.json:
        report["per_prompt"] = {
            name: {"jobs": [{"image": Path(j["image"]).name, "prompt": j["prompt"], "expected": j["expected"],
                             "text": o["text"], "ids": o["ids"]} for j, o in zip(jobs, value["jobs"])],
                   "chats": value["chats"]}
            for name, value in per_prompt.items()
        }
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
