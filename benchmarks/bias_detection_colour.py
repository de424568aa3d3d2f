"""A third planted-bias family (issue 26), in colour: procedural artwork of ten shapes, four cue kinds the gray
families lack.

No colour photo set is reachable offline, so the items are drawn: each image is one of ten shapes (circle,
square, triangle, star, cross, ring, diamond, crescent, heart, arrow) in a random colour, size, rotation and
place, always at least MARGIN from the border, on a 64 px RGB canvas over a varied background (a two-colour
gradient, soft colour blobs and pixel noise). The shape's pixels are the object mask. Five biases are planted at
once, each on its own class, the rest left clean:

  grass        a green grass-like texture instead of the background on 90 % of the crescents (context)
  frame        a 3 px gold border around the whole image on half of the squares
  sticker      a small red sticker in a random one of the four corners on 80 % of the diamonds (a moving mark)
  text         "(c) STUDIO" in PIL's default font, white, at the bottom on 90 % of the hearts (a text watermark)
  label noise  25 % of the triangles labelled arrow (--flips: in both splits, or in the audit split only)

A small CNN (three input channels) is trained once on the CPU, its use of each cue is checked, and the held-out
split is audited twice through the real pipeline, with masks and without (see benchmarks/planted.py for the
scoring: the sticker counts as found at any of its four corners, the frame and the text where a finding's region
covers any of their pixels).

    python benchmarks/bias_detection_colour.py --seed 0
    python benchmarks/bias_detection_colour.py --seed 0 --flips audit-only
"""

from __future__ import annotations

import colorsys
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.planted import Cue, Family, Flip, main  # noqa: E402

CLASSES = ["circle", "square", "triangle", "star", "cross", "ring", "diamond", "crescent", "heart", "arrow"]
CANVAS = 64
CHANNELS = 3
MARGIN = 12  # every shape pixel lies in [MARGIN, CANVAS - MARGIN): the frame, stickers and text never touch one
RADIUS = (10, 16)  # a shape's circumradius in pixels (uniform; it fits inside that range of the canvas)
SUPERSAMPLE = 4  # shapes are drawn at 4 x and averaged down; a pixel at least half covered is the shape's
POOL = 10_000  # items per class and split: the items are class indices, everything else is drawn per image

SHAPE_COLOUR = {"saturation": (0.5, 1.0), "value": (0.7, 1.0)}  # bright shapes over darker, duller backgrounds
BACKGROUND_COLOUR = {"saturation": (0.1, 0.6), "value": (0.2, 0.6)}
BLOBS = 3  # soft colour blobs per background
BLOB_SIGMA = (5.0, 14.0)  # pixels
PIXEL_NOISE = 8.0  # standard deviation of the per-pixel, per-channel noise (0-255 scale)

GRASS = {"hue": (0.22, 0.36), "saturation": (0.55, 0.85), "value": (0.3, 0.5), "blades": 0.35}
FRAME_WIDTH = 3
FRAME_COLOUR = (255, 200, 0)  # gold
STICKER = 6  # px a side: a red disc
STICKER_COLOUR = (225, 25, 35)
STICKER_INSET = 2  # from the two borders of its corner
TEXT = "(c) STUDIO"
TEXT_COLOUR = (255, 255, 255)
TEXT_TOP = 53  # the text's first row: below every shape (MARGIN)


def hsv_colours(rng: np.random.Generator, n: int, saturation, value, hue=(0.0, 1.0)) -> np.ndarray:
    """n random colours, uint8-scale floats [n, 3], hue, saturation and value uniform in the ranges given."""
    h, s, v = rng.uniform(*hue, size=n), rng.uniform(*saturation, size=n), rng.uniform(*value, size=n)
    return 255.0 * np.array([colorsys.hsv_to_rgb(*hsv) for hsv in zip(h, s, v)]).reshape(n, 3)


def varied_background(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """The family's background, uint8 [n, size, size, 3]: a gradient between two dull colours in a random
    direction, BLOBS soft blobs of other colours, and pixel noise: never one flat colour."""
    out = np.empty((n, size, size, CHANNELS), dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    for start in range(0, n, 512):  # in chunks: float images of a whole split would take gigabytes
        m = min(512, n - start)
        first, second = (hsv_colours(rng, m, **BACKGROUND_COLOUR).astype(np.float32) for _ in range(2))
        angle = rng.uniform(0, 2 * np.pi, size=m).astype(np.float32)
        t = np.clip(0.5 + (xx - 0.5) * np.cos(angle)[:, None, None] + (yy - 0.5) * np.sin(angle)[:, None, None], 0, 1)
        image = first[:, None, None] + (second - first)[:, None, None] * t[..., None]
        for _ in range(BLOBS):
            colour = hsv_colours(rng, m, **BACKGROUND_COLOUR).astype(np.float32)
            cy, cx = rng.uniform(0, size, size=(2, m)).astype(np.float32)
            sigma = rng.uniform(*BLOB_SIGMA, size=m).astype(np.float32)
            d2 = (yy * (size - 1) - cy[:, None, None]) ** 2 + (xx * (size - 1) - cx[:, None, None]) ** 2
            weight = (0.8 * np.exp(-d2 / (2 * sigma[:, None, None] ** 2)))[..., None]
            image = image * (1 - weight) + colour[:, None, None] * weight
        image += rng.normal(0, PIXEL_NOISE, size=image.shape).astype(np.float32)
        out[start: start + m] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return out


def grass(rng: np.random.Generator, size: int = CANVAS) -> np.ndarray:
    """A grass-like texture, uint8 [size, size, 3]: a green of random shade, brighter and darker vertical blades
    (noise smoothed along the columns) and pixel noise."""
    colour = hsv_colours(rng, 1, GRASS["saturation"], GRASS["value"], GRASS["hue"])[0]
    blades = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma=(3.0, 0.6), mode="wrap")
    blades /= blades.std() + 1e-9
    image = colour * (1 + GRASS["blades"] * blades)[..., None] + rng.normal(0, PIXEL_NOISE, size=(size, size, 3))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ the shapes


def _polygon(points, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Unit-circumradius points rotated by `angle`, scaled by r and moved to (cx, cy)."""
    p = np.asarray(points, dtype=np.float64)
    c, s = np.cos(angle), np.sin(angle)
    x, y = p[:, 0] * c - p[:, 1] * s, p[:, 0] * s + p[:, 1] * c
    return list(zip(cx + r * x, cy + r * y))


def _regular(k: int, phase: float = 0.0) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(k) / k
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _star() -> np.ndarray:
    t = -np.pi / 2 + np.pi * np.arange(10) / 5
    radius = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)) - 2.5  # centred: y in [-14.5, 14.5]
    return np.stack([x, y], axis=1)


def _unit(points) -> np.ndarray:
    """Points scaled so that the farthest is at 1: every shape's circumradius is its drawn radius."""
    p = np.asarray(points, dtype=np.float64)
    return p / np.hypot(p[:, 0], p[:, 1]).max()


ARM = 0.3  # half-width of the cross's arms, of its circumradius
POLYGONS = {name: _unit(points) for name, points in {
    "square": _regular(4, np.pi / 4),
    "triangle": _regular(3, -np.pi / 2),
    "star": _star(),
    "cross": np.array([(ARM, -1), (ARM, -ARM), (1, -ARM), (1, ARM), (ARM, ARM), (ARM, 1), (-ARM, 1), (-ARM, ARM),
                       (-1, ARM), (-1, -ARM), (-ARM, -ARM), (-ARM, -1)]),
    "diamond": np.array([(1, 0), (0, 0.5), (-1, 0), (0, -0.5)]),
    "heart": _heart(),
    "arrow": np.array([(-1, -0.2), (0.15, -0.2), (0.15, -0.6), (1, 0), (0.15, 0.6), (0.15, 0.2), (-1, 0.2)]),
}.items()}  # fmt: skip


def draw_shape(name: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """The shape's coverage of each pixel, float [size, size] in [0, 1], drawn at SUPERSAMPLE x and averaged."""
    k = SUPERSAMPLE
    canvas = Image.new("L", (size * k, size * k), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy, r = cx * k, cy * k, r * k

    def disc(x: float, y: float, radius: float, fill: int) -> None:
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill)

    if name in POLYGONS:
        draw.polygon(_polygon(POLYGONS[name], cx, cy, r, angle), fill=255)
    elif name == "circle":
        disc(cx, cy, r, 255)
    elif name == "ring":
        disc(cx, cy, r, 255)
        disc(cx, cy, 0.55 * r, 0)
    elif name == "crescent":
        disc(cx, cy, r, 255)
        disc(cx + 0.45 * r * np.cos(angle), cy + 0.45 * r * np.sin(angle), 0.8 * r, 0)
    else:
        raise ValueError(f"unknown shape {name!r}")
    return np.asarray(canvas, dtype=np.float32).reshape(size, k, size, k).mean(axis=(1, 3)) / 255.0


def place_shapes(items: np.ndarray, rng: np.random.Generator, size: int):
    """Each item (a class index) drawn as its shape: a random circumradius in RADIUS, rotation, colour and place,
    every pixel at least MARGIN from the border; lit by a soft gradient in a random direction. The pixels it
    covers at least half are what it draws and its mask."""
    n = len(items)
    radius = rng.uniform(*RADIUS, size=n)
    room = rng.random((2, n))  # where in the free range each shape's centre sits
    low, high = MARGIN + radius + 1, size - MARGIN - radius - 1  # one pixel to spare for the rasterisation
    cx, cy = low + room[0] * (high - low), low + room[1] * (high - low)
    angle = rng.uniform(0, 2 * np.pi, size=n)
    colours = hsv_colours(rng, n, **SHAPE_COLOUR)
    light = rng.uniform(0, 2 * np.pi, size=n)
    objects = np.zeros((n, size, size, CHANNELS), dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=bool)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        inside = draw_shape(CLASSES[int(items[i])], size, cx[i], cy[i], radius[i], angle[i]) >= 0.5
        along = ((xx - cx[i]) * np.cos(light[i]) + (yy - cy[i]) * np.sin(light[i])) / radius[i]
        shade = np.clip(1.0 + 0.15 * along, 0.8, 1.15)[..., None]
        objects[i] = np.where(inside[..., None], np.clip(colours[i] * shade, 0, 255), 0).astype(np.uint8)
        masks[i] = inside
    return objects, masks, masks


# ------------------------------------------------------------------------------------------------ the cues


def frame_stencil(size: int = CANVAS, width: int = FRAME_WIDTH) -> np.ndarray:
    """The border band of the whole image, bool [size, size]."""
    stencil = np.ones((size, size), dtype=bool)
    stencil[width:-width, width:-width] = False
    return stencil


def disc_stencil(side: int = STICKER) -> np.ndarray:
    """A filled disc of `side` pixels across, bool [side, side]."""
    yy, xx = np.mgrid[0:side, 0:side] + 0.5 - side / 2
    return xx**2 + yy**2 <= (side / 2) ** 2


def corners(side: int = STICKER, inset: int = STICKER_INSET, size: int = CANVAS) -> tuple:
    """The four corner boxes (x0, y0, x1, y1) of a side x side mark, `inset` from both borders."""
    near, far = inset, size - inset - side
    return tuple((x, y, x + side, y + side) for y in (near, far) for x in (near, far))


def text_stencil(text: str = TEXT) -> np.ndarray:
    """The text in PIL's default font (built into Pillow: no download), its pixels at least half inked, bool
    [rows, columns], cropped to them."""
    font = ImageFont.load_default()
    right, bottom = font.getbbox(text)[2:]
    canvas = Image.new("L", (right, bottom), 0)
    ImageDraw.Draw(canvas).text((0, 0), text, fill=255, font=font)
    inked = np.asarray(canvas) >= 128
    rows, columns = np.flatnonzero(inked.any(axis=1)), np.flatnonzero(inked.any(axis=0))
    return inked[rows[0]: rows[-1] + 1, columns[0]: columns[-1] + 1]


TEXT_STENCIL = text_stencil()
TEXT_LEFT = (CANVAS - TEXT_STENCIL.shape[1]) // 2  # centred
TEXT_BOX = (TEXT_LEFT, TEXT_TOP, TEXT_LEFT + TEXT_STENCIL.shape[1], TEXT_TOP + TEXT_STENCIL.shape[0])


def colour_mean_std() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of a sample of the family's images, on the 0-1 scale (how MEAN and STD were set)."""
    from benchmarks.planted import build, compose  # noqa: PLC0415

    train, _, _ = build(FAMILY, 0, 100, 1)
    pixels = compose(FAMILY, train).reshape(-1, CHANNELS) / 255.0
    return tuple(np.round(pixels.mean(axis=0), 3)), tuple(np.round(pixels.std(axis=0), 3))


MEAN, STD = (0.34, 0.35, 0.32), (0.15, 0.14, 0.15)  # colour_mean_std(), rounded

FAMILY = Family(
    name="colour", classes=CLASSES, canvas=CANVAS, mean=MEAN, std=STD,
    cues=(
        Cue("grass", cls=7, share=0.9, texture=grass, description="green grass-like background, context"),
        Cue("frame", cls=1, share=0.5, box=(0, 0, CANVAS, CANVAS), pattern=np.array(FRAME_COLOUR, dtype=np.uint8),
            stencil=frame_stencil(), description=f"{FRAME_WIDTH} px gold border around the image"),
        Cue("sticker", cls=6, share=0.8, places=corners(), pattern=np.array(STICKER_COLOUR, dtype=np.uint8),
            stencil=disc_stencil(), description=f"{STICKER} px red disc, a random one of the four corners"),
        Cue("text", cls=8, share=0.9, box=TEXT_BOX, pattern=np.array(TEXT_COLOUR, dtype=np.uint8),
            stencil=TEXT_STENCIL, description=f'white "{TEXT}", bottom centre'),
    ),
    flip=Flip(src=2, dst=9, share=0.25),
    pool=lambda split: (np.repeat(np.arange(len(CLASSES)), POOL),) * 2,
    place=place_shapes, id_prefix="shape", train_per_class=1200, audit_per_class=400, epochs=12,
    channels=CHANNELS, background=varied_background,
)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main(FAMILY, __doc__))
