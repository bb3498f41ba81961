#!/usr/bin/env python3
"""Procedural scenes of one to three coloured shapes, with a caption and question/answer pairs.

The data the demo model (Tools/train_demo.py) learns from and is measured on. Every scene is a
pure function of (seed, index): the same pair always gives the same picture, caption and
questions, so a held-out set is just a seed nobody trained on. docs/DEMO.md writes the grammar
down; the constants below are the single source of it.

Command line (writes images plus one JSON line per image):
  python3 Tools/scenes.py OUTPUT_DIR --seed 7 --count 200
  python3 Tools/scenes.py OUTPUT_DIR --seed 7 --count 5 --format png

Library use (Tools/train_demo.py, Benchmarks/quality.py):
  scene = make_scene(seed, index)        # layout, objects, caption, questions (no pixels)
  image = render(scene)                  # PIL RGB image, noise and JPEG artifacts applied

Needs Python 3.9+, numpy and Pillow.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# ---------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------

# Saturated hues only: backgrounds are desaturated, so an object never blends into them.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (35, 75, 215),
    "yellow": (240, 215, 30),
    "purple": (140, 50, 185),
    "orange": (245, 135, 20),
}
SHAPES = ["circle", "square", "triangle", "star", "cross"]
# Radius as a fraction of the image side; the gap between the two ranges keeps "small" and
# "large" unambiguous without comparing objects. Two large objects in neighbouring slots of a row
# (two grid cells apart, 0.286 of the side) never touch.
SIZES: dict[str, tuple[float, float]] = {"small": (0.07, 0.085), "large": (0.12, 0.135)}
COUNT_WORDS = ["zero", "one", "two", "three"]

# Layouts: where the objects go, and how the caption relates them.
#   single      one object in one of five zones
#   horizontal  two objects side by side (caption: A to the left of B)
#   vertical    two objects one above the other (caption: A above B)
#   row         three objects side by side, listed left to right
LAYOUTS = ["single", "horizontal", "vertical", "row"]
LAYOUT_WEIGHTS = [0.25, 0.25, 0.2, 0.3]
ZONES = ["left", "right", "top", "bottom", "middle"]
# Phrase used after an object in single-object captions and in "what shape is ...?" questions.
ZONE_PHRASES = {
    "left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
    "middle": "in the middle",
}
# Object centres sit at the centres of the cells of a GRID x GRID grid: the demo model's vision
# tower cuts its 112-pixel input into 7 x 7 patches of 16, and a shape always drawn the same way
# within its patch is what a tiny transformer can learn in minutes. Off the grid, the same tower
# barely beat chance at telling shapes apart within the training budget (docs/DEMO.md).
GRID = 7
# Cells (column, row) an object of a single-object scene may occupy, per zone.
ZONE_CELLS = {"left": [(1, 2), (1, 3), (1, 4)], "right": [(5, 2), (5, 3), (5, 4)],
              "top": [(2, 1), (3, 1), (4, 1)], "bottom": [(2, 5), (3, 5), (4, 5)], "middle": [(3, 3)]}

QUESTION_TYPES = ["color", "shape", "count", "position"]


@dataclasses.dataclass
class SceneObject:
    shape: str
    color: str
    size: str
    zone: str          # left/right/top/bottom/middle: the answer to "where is ...?"
    x: float           # centre, fractions of the image side
    y: float
    radius: float      # fraction of the image side
    rotation: float    # degrees, small: a square never turns into a diamond

    def phrase(self) -> str:
        return f"a {self.size} {self.color} {self.shape}"


@dataclasses.dataclass
class Question:
    kind: str          # one of QUESTION_TYPES
    question: str
    answer: str

    def prompt(self) -> str:
        return f"Question: {self.question} Answer:"


@dataclasses.dataclass
class Scene:
    seed: int
    index: int
    layout: str
    objects: list[SceneObject]   # in caption order (left to right, or top to bottom)
    caption: str
    questions: list[Question]
    style: dict                  # background, noise, JPEG and canvas parameters for render()

    def to_json(self) -> dict:
        return {
            "seed": self.seed, "index": self.index, "layout": self.layout, "caption": self.caption,
            "objects": [dataclasses.asdict(o) for o in self.objects],
            "questions": [dataclasses.asdict(q) for q in self.questions],
            "style": self.style,
        }


# ---------------------------------------------------------------------------------------------
# Scene content
# ---------------------------------------------------------------------------------------------

def scene_random(seed: int, index: int) -> random.Random:
    # String seeds hash with SHA-512 in CPython: stable across runs, platforms and versions.
    return random.Random(f"blip2-demo-scenes/{seed}/{index}")


def make_scene(seed: int, index: int) -> Scene:
    """The scene for (seed, index): objects, caption, questions and rendering style."""
    rng = scene_random(seed, index)
    layout = rng.choices(LAYOUTS, LAYOUT_WEIGHTS)[0]
    count = {"single": 1, "horizontal": 2, "vertical": 2, "row": 3}[layout]
    # Shapes are distinct within a scene so "the circle" always names one object; colours may repeat.
    shapes = rng.sample(SHAPES, count)
    colors = [rng.choice(list(COLORS)) for _ in range(count)]
    sizes = [rng.choice(list(SIZES)) for _ in range(count)]

    if layout == "single":
        zones = [rng.choice(ZONES)]
        cells = [rng.choice(ZONE_CELLS[zones[0]])]
    elif layout == "horizontal":
        # Left and right halves, at least three cells apart; rows at most one apart.
        zones = ["left", "right"]
        columns = rng.choice([(1, 4), (1, 5), (2, 5)])
        row = rng.choice([2, 3, 4])
        other = min(4, max(2, row + rng.choice([-1, 0, 1])))
        cells = [(columns[0], row), (columns[1], other)]
    elif layout == "vertical":
        zones = ["top", "bottom"]
        rows = rng.choice([(1, 4), (1, 5), (2, 5)])
        column = rng.choice([2, 3, 4])
        other = min(4, max(2, column + rng.choice([-1, 0, 1])))
        cells = [(column, rows[0]), (other, rows[1])]
    else:
        zones = ["left", "middle", "right"]
        cells = [(column, rng.choice([2, 3, 4])) for column in (1, 3, 5)]
    centers = [((column + 0.5) / GRID, (row + 0.5) / GRID) for column, row in cells]

    objects = []
    for shape, color, size, zone, (x, y) in zip(shapes, colors, sizes, zones, centers):
        low, high = SIZES[size]
        objects.append(SceneObject(shape=shape, color=color, size=size, zone=zone, x=round(x, 4),
                                   y=round(y, 4), radius=round(rng.uniform(low, high), 4),
                                   rotation=round(rng.uniform(-12, 12), 2)))

    return Scene(seed=seed, index=index, layout=layout, objects=objects, caption=caption_for(layout, objects),
                 questions=questions_for(objects, rng), style=make_style(rng))


def caption_for(layout: str, objects: list[SceneObject]) -> str:
    phrases = [o.phrase() for o in objects]
    if layout == "single":
        return f"{phrases[0]} {ZONE_PHRASES[objects[0].zone]}"
    if layout == "horizontal":
        return f"{phrases[0]} to the left of {phrases[1]}"
    if layout == "vertical":
        return f"{phrases[0]} above {phrases[1]}"
    return f"{phrases[0]}, {phrases[1]} and {phrases[2]}"


def questions_for(objects: list[SceneObject], rng: random.Random) -> list[Question]:
    """One question of each type, each naming exactly one object (or counting)."""
    colors = [o.color for o in objects]
    unique_color = [o for o in objects if colors.count(o.color) == 1]

    target = rng.choice(objects)
    color = Question("color", f"what color is the {target.shape}?", target.color)

    target = rng.choice(objects)
    if target in unique_color and rng.random() < 0.6:
        shape = Question("shape", f"what shape is the {target.color} object?", target.shape)
    else:
        shape = Question("shape", f"what shape is {ZONE_PHRASES[target.zone]}?", target.shape)

    if rng.random() < 0.4:
        count = Question("count", "how many objects are there?", COUNT_WORDS[len(objects)])
    else:
        # Colours that are present are asked about more often than absent ones (which answer "zero").
        asked = rng.choice(colors) if rng.random() < 0.7 else rng.choice(list(COLORS))
        count = Question("count", f"how many {asked} objects are there?", COUNT_WORDS[colors.count(asked)])

    target = rng.choice(objects)
    position = Question("position", f"where is the {target.color} {target.shape}?", target.zone)
    return [color, shape, count, position]


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

BACKGROUNDS = ["solid", "gradient", "two-tone", "stripes", "checker", "clouds"]


def muted_color(rng: random.Random, lightness: float) -> tuple[int, int, int]:
    """A background colour: low saturation, never one of COLORS."""
    saturation = rng.uniform(0.0, 0.22)
    hue = rng.uniform(0, 2 * math.pi)
    base = lightness * 255
    return tuple(int(max(0, min(255, base * (1 + saturation * math.cos(hue + k * 2 * math.pi / 3)))))
                 for k in range(3))


def background_colors(rng: random.Random) -> list[tuple[int, int, int]]:
    """Two muted colours of nearby lightness: patterns stay behind the objects, not among them."""
    lightness = rng.uniform(0.15, 0.92)
    other = min(0.95, max(0.1, lightness + rng.choice([-1, 1]) * rng.uniform(0.04, 0.2)))
    return [muted_color(rng, lightness), muted_color(rng, other)]


def make_style(rng: random.Random) -> dict:
    return {
        "canvas": rng.choice([128, 160, 192, 224, 256]),
        "background": rng.choice(BACKGROUNDS),
        "background_colors": background_colors(rng),
        "background_angle": round(rng.uniform(0, 360), 1),
        "background_period": round(rng.uniform(0.08, 0.25), 3),
        "texture_seed": rng.getrandbits(32),
        "color_jitter": [[rng.randint(-18, 18) for _ in range(3)] for _ in range(3)],
        "outline": rng.random() < 0.3,
        "blur": round(rng.uniform(0.0, 1.0), 2) if rng.random() < 0.25 else 0.0,
        "noise_sigma": round(rng.uniform(2.0, 10.0), 2) if rng.random() < 0.6 else 0.0,
        "noise_seed": rng.getrandbits(32),
        "jpeg_quality": rng.randint(25, 90) if rng.random() < 0.6 else None,
    }


def background(style: dict, side: int) -> np.ndarray:
    first, second = (np.array(c, dtype=np.float32) for c in style["background_colors"])
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    angle = math.radians(style["background_angle"])
    along = (x - 0.5) * math.cos(angle) + (y - 0.5) * math.sin(angle)
    kind = style["background"]
    if kind == "solid":
        weight = np.zeros_like(x)
    elif kind == "gradient":
        weight = np.clip(along + 0.5, 0, 1)
    elif kind == "two-tone":
        weight = (along > 0).astype(np.float32)
    elif kind == "stripes":
        weight = (np.floor(along / style["background_period"]) % 2).astype(np.float32)
    elif kind == "checker":
        period = style["background_period"]
        weight = ((np.floor(x / period) + np.floor(y / period)) % 2).astype(np.float32)
    else:  # clouds: smooth random field
        coarse = np.random.default_rng(style["texture_seed"]).random((6, 6)).astype(np.float32)
        field = Image.fromarray((coarse * 255).astype(np.uint8), "L").resize((side, side), Image.BICUBIC)
        weight = np.asarray(field, dtype=np.float32) / 255
    return first * (1 - weight[..., None]) + second * weight[..., None]


def shape_polygon(shape: str, cx: float, cy: float, r: float, rotation: float) -> list[tuple[float, float]]:
    def rotated(points):
        a = math.radians(rotation)
        return [(cx + px * math.cos(a) - py * math.sin(a), cy + px * math.sin(a) + py * math.cos(a))
                for px, py in points]

    if shape == "square":
        s = r * 0.85
        return rotated([(-s, -s), (s, -s), (s, s), (-s, s)])
    if shape == "triangle":
        return rotated([(r * math.cos(math.radians(a)), r * math.sin(math.radians(a))) for a in (-90, 30, 150)])
    if shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.45
            a = math.radians(-90 + 36 * k)
            points.append((radius * math.cos(a), radius * math.sin(a)))
        return rotated(points)
    if shape == "cross":
        w = r * 0.34
        return rotated([(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w),
                        (-r, w), (-r, -w), (-w, -w)])
    raise ValueError(shape)


SUPERSAMPLE = 2


def object_mask(scene: Scene, side: int) -> np.ndarray:
    """[side, side] uint8: 1 + the object's index where an object is drawn, 0 elsewhere."""
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    for number, obj in enumerate(scene.objects, start=1):
        cx, cy, r = obj.x * side, obj.y * side, obj.radius * side
        if obj.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=number)
        else:
            draw.polygon(shape_polygon(obj.shape, cx, cy, r, obj.rotation), fill=number)
    return np.asarray(mask)


def render(scene: Scene) -> Image.Image:
    """The scene as an RGB image (noise and JPEG round trip included, as the model will see it)."""
    style = scene.style
    side = style["canvas"]
    big = side * SUPERSAMPLE
    # The background is computed at the final size and repeated up: the box downscale below gives
    # exactly those pixels back, at a quarter of the cost.
    canvas = Image.fromarray(np.clip(background(style, side), 0, 255).astype(np.uint8), "RGB")
    canvas = canvas.resize((big, big), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    for obj, jitter in zip(scene.objects, style["color_jitter"]):
        fill = tuple(max(0, min(255, c + j)) for c, j in zip(COLORS[obj.color], jitter))
        outline = tuple(c // 2 for c in fill) if style["outline"] else None
        width = max(1, int(big * 0.012)) if outline else 0
        cx, cy, r = obj.x * big, obj.y * big, obj.radius * big
        if obj.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=outline, width=width)
        else:
            draw.polygon(shape_polygon(obj.shape, cx, cy, r, obj.rotation), fill=fill, outline=outline,
                         width=width)
    image = canvas.resize((side, side), Image.BOX)
    if style["blur"]:
        image = image.filter(ImageFilter.GaussianBlur(style["blur"]))
    if style["noise_sigma"]:
        noise = np.random.default_rng(style["noise_seed"]).normal(0, style["noise_sigma"], (side, side, 3))
        image = Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8))
    if style["jpeg_quality"] is not None:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=style["jpeg_quality"])
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------

def chat_prompt(history: list[tuple[str, str]], question: str) -> str:
    """DESIGN §1 chat prompt: previous turns, then the current question."""
    turns = [f"Question: {q} Answer: {a}." for q, a in history]
    return " ".join(turns + [f"Question: {question} Answer:"])


def text_corpus(seed: int, count: int) -> list[str]:
    """Every string the model reads or writes, for training the tokenizer."""
    lines = []
    for index in range(count):
        scene = make_scene(seed, index)
        lines.append(scene.caption)
        for q in scene.questions:
            lines.append(f"{q.prompt()} {q.answer}.")
    return lines


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def write_set(output: Path, seed: int, count: int, image_format: str) -> None:
    output.mkdir(parents=True, exist_ok=True)
    with open(output / "scenes.jsonl", "w") as listing:
        for index in range(count):
            scene = make_scene(seed, index)
            image = render(scene)
            name = f"scene-{seed}-{index:05d}.{image_format}"
            if image_format == "png":
                image.save(output / name, "PNG")
            else:
                # The render already went through JPEG when the style asks for it; store the pixels
                # at high quality so the file adds almost nothing on top.
                image.save(output / name, "JPEG", quality=95)
            listing.write(json.dumps({"file": name, **scene.to_json()}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="folder for the images and scenes.jsonl")
    parser.add_argument("--seed", type=int, required=True, help="scene seed (training used 1; evaluation 2)")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--format", choices=["png", "jpg"], default="png")
    args = parser.parse_args()
    if args.count < 1:
        sys.exit("--count must be at least 1")
    write_set(args.output, args.seed, args.count, args.format)
    print(f"wrote {args.count} scenes to {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
