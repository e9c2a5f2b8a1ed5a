"""SynDigits ("Syn Numbers", Ganin & Lempitsky 2015) and the `syndigits_to_svhn` pair.

SynDigits are rendered house-number-like crops: 1-3 digit numbers in varied fonts, position,
scale, rotation, colours and blur, 32x32 RGB, labelled by the centred digit.
- Official release: `dataset.root=/path` holding `/path/synth_train_32x32.mat` and
  `/path/synth_test_32x32.mat` (SVHN's .mat format), used when present.
- Otherwise generated offline by the same recipe with the DejaVu fonts shipped in matplotlib
  (the paper used Windows fonts): `generated_{train,val,test}_size` images, deterministic for
  `split_seed`, cached with a checksum in `paths.data_dir`.
The target, SVHN, always comes from `dataset.root` (dann/data/svhn.py).
"""

import functools
import logging
from pathlib import Path

import numpy as np
import torch

from dann.data.cache import cached_tensors
from dann.data.registry import (
    DomainData,
    PairData,
    PairSpec,
    Split,
    hold_out_val,
    register_pair,
)
from dann.data.svhn import load_svhn, read_digits_mat
from dann.errors import DataError

log = logging.getLogger(__name__)

SYNDIGITS_FILES = {"train": "synth_train_32x32.mat", "test": "synth_test_32x32.mat"}
GENERATED_SIZES = {"train": 20_000, "val": 2_000, "test": 2_000}  # generated_<split>_size
GENERATOR_VERSION = 1
SIZE = 32  # output images are SIZE x SIZE RGB
SUPERSAMPLE = 2  # glyphs are drawn and rotated at 2x, then box-downsampled (anti-aliasing)
FONT_PX = (20, 36)  # font size range at output scale: digit heights of about 15..26 px
MAX_ROTATION = 15.0  # degrees
MAX_SHIFT = 2.5  # px at output scale, of the centred digit from the image centre
MIN_LUMA_CONTRAST = 70.0  # |luma(foreground) - luma(background)| on 0..255


def dejavu_fonts() -> list[Path]:
    """The DejaVu TrueType fonts shipped inside matplotlib (the 'Display' ones have no digits)."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    fonts = sorted(p for p in folder.glob("DejaVu*.ttf") if "Display" not in p.name)
    if not fonts:
        raise DataError(f"no DejaVu*.ttf fonts in {folder}; reinstall matplotlib")
    return fonts


@functools.lru_cache(maxsize=4096)
def _glyph(font_path: str, size: int, digit: int):
    """A digit rendered once per font and size: (ink mask "L", ink offset from the pen (left, top),
    ink width and height, advance width)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(font_path, size)
    left, top, right, bottom = font.getbbox(str(digit))
    ink = Image.new("L", (right - left, bottom - top), 0)
    ImageDraw.Draw(ink).text((-left, -top), str(digit), fill=255, font=font)
    return ink, left, top, right - left, bottom - top, font.getlength(str(digit))


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114])


def _colours(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Random background and foreground colours (n x 3, float) with enough luma contrast."""
    bg, fg = rng.uniform(0, 255, (n, 3)), rng.uniform(0, 255, (n, 3))
    low = np.abs(_luma(fg) - _luma(bg)) < MIN_LUMA_CONTRAST
    while low.any():  # resample the failures; deterministic for the generator's state
        fg[low] = rng.uniform(0, 255, (int(low.sum()), 3))
        low = np.abs(_luma(fg) - _luma(bg)) < MIN_LUMA_CONTRAST
    return bg, fg


def _glyph_mask(
    digits: list[int], centre: int, font_path: str, size: int, gaps: list[float], params
) -> np.ndarray:
    """One number drawn white on black at `SUPERSAMPLE` x, digit `centre` centred (plus a shift),
    rotated about it, downsampled to SIZE x SIZE and blurred; float mask in [0, 1]."""
    from PIL import Image, ImageFilter

    angle, dx, dy, blur = params
    big = SIZE * SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    cx, cy = big / 2 + dx * SUPERSAMPLE, big / 2 + dy * SUPERSAMPLE
    glyphs = [_glyph(font_path, size, d) for d in digits]
    pens = [0.0]  # pen x of each digit relative to the first
    for glyph, gap in zip(glyphs[:-1], gaps, strict=False):
        pens.append(pens[-1] + glyph[5] + gap * size)
    _, left, top, width, height, _ = glyphs[centre]
    x0 = cx - pens[centre] - left - width / 2  # the centre digit's ink box centred on (cx, cy)
    y0 = cy - top - height / 2
    for (ink, left, top, *_), pen in zip(glyphs, pens, strict=True):
        canvas.paste(255, (round(x0 + pen + left), round(y0 + top)), ink)  # clipped at edges
    canvas = canvas.rotate(angle, resample=Image.BILINEAR, center=(cx, cy))
    small = canvas.reduce(SUPERSAMPLE)
    if blur > 0:
        small = small.filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(small, dtype=np.float32) / 255


def render_numbers(n: int, seed: int, fonts: list[Path]) -> dict[str, torch.Tensor]:
    """`n` SynDigits-style images (uint8 n x 3 x SIZE x SIZE) and their labels (the centred digit
    of a 1-3 digit number). All randomness is drawn up front from `seed`; only glyph drawing is
    per sample (PIL), colouring, background and noise are vectorised."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(10, size=n)
    num_digits = rng.integers(1, 4, size=n)
    neighbours = rng.integers(10, size=(n, 2))
    label_on_left = rng.random(n) < 0.5  # two-digit numbers: which side the label is on
    font_index = rng.integers(len(fonts), size=n)
    font_px = rng.integers(FONT_PX[0], FONT_PX[1] + 1, size=n)
    gaps = rng.uniform(-0.05, 0.2, size=(n, 2))  # extra space between digits, in em
    angles = rng.uniform(-MAX_ROTATION, MAX_ROTATION, size=n)
    shifts = rng.uniform(-MAX_SHIFT, MAX_SHIFT, size=(n, 2))
    blurs = rng.choice([0.0, 0.5, 0.8, 1.1], size=n, p=[0.25, 0.35, 0.25, 0.15])
    bg, fg = (c.astype(np.float32) for c in _colours(rng, n))
    gradient_dir = rng.uniform(0, 2 * np.pi, size=n).astype(np.float32)
    gradient_amp = rng.uniform(0, 40, size=n).astype(np.float32)  # luma change across the image
    noise_std = rng.uniform(0, 8, size=n).astype(np.float32)
    noise = rng.standard_normal((n, SIZE, SIZE, 1), dtype=np.float32)

    font_paths = [str(f) for f in fonts]
    masks = np.empty((n, SIZE, SIZE), dtype=np.float32)
    for i in range(n):
        label, k = int(labels[i]), int(num_digits[i])
        if k == 1:
            digits, centre = [label], 0
        elif k == 2:
            other = int(neighbours[i, 0])
            digits, centre = ([label, other], 0) if label_on_left[i] else ([other, label], 1)
        else:
            digits, centre = [int(neighbours[i, 0]), label, int(neighbours[i, 1])], 1
        size = int(font_px[i]) * SUPERSAMPLE
        params = (float(angles[i]), float(shifts[i, 0]), float(shifts[i, 1]), float(blurs[i]))
        masks[i] = _glyph_mask(digits, centre, font_paths[font_index[i]], size, gaps[i], params)

    images = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    coords = (np.arange(SIZE, dtype=np.float32) - (SIZE - 1) / 2) / SIZE  # -0.5 .. 0.5
    for lo in range(0, n, 4096):  # float32 chunks bound the memory of the vectorised colouring
        i = slice(lo, lo + 4096)
        ramp = (
            np.cos(gradient_dir[i])[:, None, None] * coords[None, None, :]
            + np.sin(gradient_dir[i])[:, None, None] * coords[None, :, None]
        ) * gradient_amp[i, None, None]
        background = bg[i, None, None, :] + ramp[..., None]
        m = masks[i, ..., None]
        out = background * (1 - m) + fg[i, None, None, :] * m
        out += noise[i] * noise_std[i, None, None, None]
        images[i] = np.clip(np.rint(out), 0, 255)
    return {
        "images": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        "labels": torch.from_numpy(labels).long(),
    }


def generated_sizes(options: dict) -> dict[str, int]:
    sizes = {k: int(options.get(f"generated_{k}_size", v)) for k, v in GENERATED_SIZES.items()}
    bad = {k: v for k, v in sizes.items() if v < 1}
    if bad:
        raise ValueError(f"generated_<split>_size must be >= 1, got {bad}")
    return sizes


def generate_syndigits(data_dir: Path, seed: int, sizes: dict[str, int]) -> DomainData:
    import PIL

    fonts = dejavu_fonts()
    meta = {
        "version": GENERATOR_VERSION,
        "seed": seed,
        "sizes": dict(sizes),
        "fonts": [f.name for f in fonts],
        "pillow": PIL.__version__,  # glyph rasterisation may change between releases
    }

    def build() -> dict[str, torch.Tensor]:
        out = {}
        for i, (split, n) in enumerate(sizes.items()):
            part = render_numbers(n, seed * 1_000 + i, fonts)
            out[f"{split}_images"], out[f"{split}_labels"] = part["images"], part["labels"]
        return out

    name = "_".join(f"{k}{v}" for k, v in sizes.items())
    data = cached_tensors(Path(data_dir) / f"syndigits_generated_{name}_seed{seed}.pt", meta, build)
    return DomainData(
        "syndigits-generated",
        **{k: Split(data[f"{k}_images"], data[f"{k}_labels"]) for k in sizes},
    )


def syndigits_folder(root: str) -> Path:
    """ROOT, or the one folder under it that holds the .mat files (as an archive unpacked)."""
    base = Path(root)
    if not any((base / f).is_file() for f in SYNDIGITS_FILES.values()) and base.is_dir():
        holding = [d for d in sorted(base.iterdir()) if (d / SYNDIGITS_FILES["train"]).is_file()]
        if len(holding) == 1:
            return holding[0]
    return base


def load_syndigits_official(root: str, split_seed: int) -> DomainData | None:
    base = syndigits_folder(root)
    present = {k: (base / f).is_file() for k, f in SYNDIGITS_FILES.items()}
    if not any(present.values()):
        return None
    if not all(present.values()):
        missing = [SYNDIGITS_FILES[k] for k, ok in present.items() if not ok]
        raise DataError(
            f"{base} has only part of SynDigits: missing {', '.join(missing)}. Expected "
            f"/path/synth_train_32x32.mat and /path/synth_test_32x32.mat (SVHN's .mat format), "
            f"or neither, to generate SynDigits offline."
        )
    train = read_digits_mat(base / SYNDIGITS_FILES["train"])
    test = read_digits_mat(base / SYNDIGITS_FILES["test"])
    return hold_out_val("syndigits", train, test, split_seed)


@register_pair("syndigits_to_svhn")
def load_syndigits_to_svhn(spec: PairSpec) -> PairData:
    svhn = load_svhn(spec.root, spec.split_seed)  # first: no SVHN, no point generating
    syn = load_syndigits_official(spec.root, spec.split_seed)
    if syn is None:
        sizes = generated_sizes(spec.options)
        syn = generate_syndigits(spec.data_dir, spec.split_seed, sizes)
        log.warning(
            "GENERATED SOURCE: SynDigits rendered offline with %d DejaVu fonts from matplotlib "
            "(train %d / val %d / test %d, not the 500,000-image release). For the real set put "
            "synth_train_32x32.mat and synth_test_32x32.mat (SVHN .mat format) in %s.",
            len(dejavu_fonts()),
            sizes["train"],
            sizes["val"],
            sizes["test"],
            spec.root,
        )
    return PairData(source=syn, target=svhn, num_classes=10)
