"""Procedural visual tasks with exact answers, drawn with Pillow on the fly: name a shape's colour or kind, count
shapes, say which of two shapes is bigger or which side one is on, read a drawn digit. Each is a generator task
(``function: verity.data.visual:shapes``, ``kwargs: {kind: colour}``) whose rows carry their image.

Every row also names its ``labels`` (the answer set), so the ``classification`` verifier scores it as CLS-RL
does (a class label as the reward), and the ``accuracy`` verifier by exact match.
"""

from __future__ import annotations

import random
from typing import Any

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
SHAPES = ("circle", "square", "triangle")
KINDS = ("colour", "shape", "count", "bigger", "side", "digit")
QUESTIONS = {
    "colour": "What colour is the shape?",
    "shape": "What shape is it?",
    "count": "How many shapes are there?",
    "bigger": "Which shape is bigger, left or right?",
    "side": "Is the shape on the left or the right?",
    "digit": "Which digit is drawn?",
}


def shapes(seed: int, index: int, kind: str = "colour", size: int = 32, max_count: int = 4) -> dict[str, Any]:
    """Row ``index`` of the ``kind`` task on ``size`` x ``size`` images: ``{"prompt", "answer", "images",
    "labels"}``. The same (seed, index) always draws the same image."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    from PIL import Image, ImageDraw

    rng = random.Random(seed * 1_000_003 + index)
    image = Image.new("RGB", (size, size), _background(rng))
    draw = ImageDraw.Draw(image)
    unit = size / 32  # geometry below is written for 32 pixels
    if kind == "count":
        answer = str(rng.randint(1, max_count))
        for cell in rng.sample(range(4), int(answer)):  # one shape per quadrant: they never overlap
            x, y = (cell % 2) * 16 + 3 + rng.randint(0, 3), (cell // 2) * 16 + 3 + rng.randint(0, 3)
            _shape(draw, rng.choice(SHAPES), x * unit, y * unit, 9 * unit, rng.choice(list(COLOURS.values())))
        labels = [str(n) for n in range(1, max_count + 1)]
    elif kind in ("bigger", "side"):
        answer = rng.choice(["left", "right"])
        small, big = rng.randint(5, 7), rng.randint(11, 13)
        colour = rng.choice(list(COLOURS.values()))
        if kind == "bigger":
            sizes = (big, small) if answer == "left" else (small, big)
            for x, s in zip((2, 17), sizes, strict=True):
                _shape(draw, rng.choice(SHAPES), x * unit, (16 - s / 2) * unit, s * unit, colour)
        else:
            x = rng.randint(1, 4) if answer == "left" else rng.randint(19, 22)
            _shape(draw, rng.choice(SHAPES), x * unit, rng.randint(4, 18) * unit, 10 * unit, colour)
        labels = ["left", "right"]
    elif kind == "digit":
        answer = str(rng.randint(0, 9))
        draw.text((rng.randint(8, 18) * unit, rng.randint(6, 14) * unit), answer, fill=(0, 0, 0))
        labels = [str(d) for d in range(10)]
    else:
        name, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        s = rng.randint(12, 18)
        x, y = rng.randint(2, 30 - s), rng.randint(2, 30 - s)
        _shape(draw, shape, x * unit, y * unit, s * unit, COLOURS[name])
        answer = name if kind == "colour" else shape
        labels = list(COLOURS) if kind == "colour" else list(SHAPES)
    return {"prompt": QUESTIONS[kind], "answer": answer, "images": [image], "labels": labels}


def _background(rng: random.Random) -> tuple[int, int, int]:
    """A light grey, varied so the model cannot key on one exact background."""
    level = rng.randint(225, 255)
    return (level, level, level)


def _shape(draw: Any, shape: str, x: float, y: float, s: float, colour: tuple[int, int, int]) -> None:
    """A filled ``shape`` in the ``s`` x ``s`` box at (x, y)."""
    box = (x, y, x + s, y + s)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(x + s / 2, y), (x, y + s), (x + s, y + s)], fill=colour)
