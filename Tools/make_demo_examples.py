#!/usr/bin/env python3
"""Write the demo model's example images (Models/examples) and what they show.

Walks the scenes of one seed (42 by default; the model trained on seed 1) in order and keeps, for each
layout in turn, the first scene that the model gets entirely right: its caption, its four answers and
a two-turn chat (the second question asked after the first and its answer), greedy, with transformers
on the trained checkpoint and, given --model, with the `blip2` runtime on the converted file that is
bundled. Every scene it looked at and skipped is listed in the output with what was said instead, so
the choice is on record. The kept scenes are written as PNG files plus examples.json: per image the
file, the scene's own caption, questions and chat (the ground truth, from Tools/scenes.py) and
transformers' greedy outputs.

  python3 Tools/make_demo_examples.py /work/demo-checkpoint Models/examples \
      --model Models/demo-q8.blip2 --bin .build/release

Needs torch, transformers (5.x), numpy and Pillow.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scenes  # noqa: E402
import train_demo  # noqa: E402


def runtime_outputs(blip2: Path, model: Path, image: Path, scene: scenes.Scene) -> dict:
    """What the `blip2` command line says for the scene: caption, the four answers, the chat's second answer."""
    def run(*arguments: str, stdin: str | None = None) -> str:
        done = subprocess.run([str(blip2), *arguments], input=stdin, capture_output=True, text=True, check=True)
        return done.stdout

    caption = json.loads(run("caption", str(model), str(image), "--json"))["text"]
    answers = [json.loads(run("ask", str(model), str(image), q.question, "--json"))["text"] for q in scene.questions]
    first, second = scene.questions[:2]
    turns = run("chat", str(model), str(image), "--json", stdin=f"{first.question}\n{second.question}\n").splitlines()
    return {"caption": caption, "answers": answers, "chat": json.loads(turns[-1])["text"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--scan", type=int, default=200, help="give up after this many scenes")
    parser.add_argument("--model", type=Path, help="the converted model file that is bundled")
    parser.add_argument("--bin", type=Path, default=Path(".build/release"), help="folder holding `blip2`")
    args = parser.parse_args()

    import torch
    from transformers import Blip2ForConditionalGeneration, Blip2Processor
    torch.set_num_threads(1)
    model = Blip2ForConditionalGeneration.from_pretrained(str(args.checkpoint), dtype=torch.float32).eval()
    processor = Blip2Processor.from_pretrained(str(args.checkpoint), backend="pil")

    args.output.mkdir(parents=True, exist_ok=True)
    kept, skipped = [], []
    wanted = [scenes.LAYOUTS[k % len(scenes.LAYOUTS)] for k in range(args.count)]
    for index in range(args.scan):
        if not wanted:
            break
        scene = scenes.make_scene(args.seed, index)
        if scene.layout not in wanted:
            continue
        image = scenes.render(scene)
        caption = train_demo.generate_text(model, processor, image, None, 20)
        answers = [train_demo.generate_text(model, processor, image, q.prompt(), 10) for q in scene.questions]
        first, second = scene.questions[:2]
        chat_prompt = scenes.chat_prompt([(first.question, first.answer)], second.question)
        chat = train_demo.generate_text(model, processor, image, chat_prompt, 10)
        record = {"index": index, "layout": scene.layout, "caption": scene.caption, "transformers_caption": caption,
                  "questions": [{"kind": q.kind, "question": q.question, "prompt": q.prompt(), "answer": q.answer,
                                 "transformers_answer": a} for q, a in zip(scene.questions, answers)],
                  "chat": {"questions": [first.question, second.question], "prompt": chat_prompt,
                           "answers": [first.answer, second.answer], "transformers_answer": chat}}
        right = caption == scene.caption and chat == second.answer and all(
            a == q.answer for q, a in zip(scene.questions, answers))
        name = f"{scene.layout}-{args.seed}-{index}.png"
        if right and args.model:
            image.save(args.output / name, "PNG")
            ours = runtime_outputs(args.bin / "blip2", args.model, args.output / name, scene)
            record["runtime"] = ours
            right = ours == {"caption": scene.caption, "answers": [q.answer for q in scene.questions],
                             "chat": second.answer}
            if not right:
                (args.output / name).unlink()
        if not right:
            skipped.append(record)
            continue
        wanted.remove(scene.layout)
        image.save(args.output / name, "PNG")
        kept.append({"file": name, **record})
    if wanted:
        sys.exit(f"only {len(kept)} of {args.count} examples found in {args.scan} scenes")
    (args.output / "examples.json").write_text(json.dumps(
        {"seed": args.seed, "checkpoint": args.checkpoint.name, "examples": kept, "skipped": skipped},
        indent=2) + "\n")
    print(f"kept {len(kept)} examples, skipped {len(skipped)} scenes with something wrong", file=sys.stderr)


if __name__ == "__main__":
    main()
