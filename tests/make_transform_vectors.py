"""Writes tests/transform_vectors.json: the evaluation transform's shared test vectors.

Each vector is a small image (PNG bytes, and its decoded RGB pixels so that no platform
decoder takes part in the comparison), the transform parameters as an export manifest's
``input`` spec states them, and what :class:`hydravit_edge.transform.EvalTransform` makes of
it: the size after the resize, the crop box, the sha256 of the resized and centre-cropped uint8
RGB pixels (exact: the apps reproduce Pillow's 8-bit resampling bit for bit) and checksums of
the normalised float32 CHW tensor (sum, sum of squares, sampled values; within ``tolerance``).

Python (tests/test_transform_vectors.py), Kotlin (android_demo/policy, PreprocessTest) and
Swift (ios_demo/HydraPolicy, PreprocessVectorTests) all check these vectors.

    python tests/make_transform_vectors.py --write   # rewrite the file
    python tests/make_transform_vectors.py --check   # exit 1 if the file is stale

The PNG files are encoded here (stored deflate blocks), not by Pillow, so that the bytes do not
depend on the zlib build; sums use ``math.fsum`` (exactly rounded), so the file is the same on
every machine with the same Pillow resampling (Pillow >= 13, which runs the vertical pass first
when the height shrinks more than twice as much as the width).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import math
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hydravit_edge.transform import EvalTransform  # noqa: E402

PATH = ROOT / "tests" / "transform_vectors.json"
FORMAT = "hydravit-edge-transform-vectors"
VERSION = 1
TOLERANCE = 1e-5

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

# name, what it covers, PNG mode, width, height, pattern, (img_size, crop_pct, interpolation, mean/std)
CASES = [
    ("rgb_bicubic_down", "RGB, landscape, bicubic downscale (37 -> 32 short side), crop 28",
     "RGB", 45, 37, "mixed", (28, 0.875, "bicubic", IMAGENET)),
    ("grey_bicubic_up", "grey (L) portrait, bicubic upscale (14 -> 32), crop top 8.5 -> 8 (half-even)",
     "L", 14, 20, "mixed", (28, 0.875, "bicubic", HALF)),
    ("rgba_bilinear_down", "RGBA (alpha dropped, colours kept), square, bilinear downscale 30 -> 24",
     "RGBA", 30, 30, "mixed", (24, 1.0, "bilinear", IMAGENET)),
    ("rgb_bilinear_up_half_even", "RGB landscape, bilinear upscale 12 -> 16 (21 x 16), crop left 2.5 -> 2",
     "RGB", 16, 12, "mixed", (16, 1.0, "bilinear", HALF)),
    ("rgb_crop_only", "RGB, shorter side already 32: no resize, centre crop only",
     "RGB", 40, 32, "mixed", (28, 0.875, "bicubic", IMAGENET)),
    ("grey_checker_bicubic_up", "grey 0/255 checkerboard, bicubic upscale: overshoot clipped to 0..255",
     "L", 9, 7, "checker", (28, 0.875, "bicubic", IMAGENET)),
    ("rgb_tall_bilinear_down", "RGB 15 x 40, bilinear downscale: Pillow runs the vertical pass first",
     "RGB", 15, 40, "mixed", (12, 1.0, "bilinear", IMAGENET)),
    ("rgb_tall_bicubic_down", "RGB 20 x 64, bicubic downscale: vertical pass first",
     "RGB", 20, 64, "mixed", (14, 0.875, "bicubic", IMAGENET)),
    ("rgb_lanczos_down", "RGB, lanczos downscale 19 -> 18", "RGB", 23, 19, "mixed",
     (16, 0.875, "lanczos", IMAGENET)),
    ("rgb_hamming_down", "RGB, hamming, crop_pct 0.9 (resize 13)", "RGB", 19, 23, "mixed",
     (12, 0.9, "hamming", HALF)),
    ("rgb_box_down", "RGB, box filter downscale 21 -> 13 (crop_pct 0.75)", "RGB", 26, 21, "mixed",
     (10, 0.75, "box", IMAGENET)),
    ("rgba_bicubic_up_56", "RGBA 72 x 60, bicubic upscale 60 -> 64, crop 56", "RGBA", 72, 60, "mixed",
     (56, 0.875, "bicubic", IMAGENET)),
    ("rgb_bicubic_down_64", "RGB 100 x 75, bicubic downscale 75 -> 73 (floor(64 / 0.875)), crop 64",
     "RGB", 100, 75, "mixed", (64, 0.875, "bicubic", IMAGENET)),
]

_CHANNELS = {"L": 1, "RGB": 3, "RGBA": 4}
_PNG_COLOR_TYPE = {"L": 0, "RGB": 2, "RGBA": 6}


def _hash(x: int, y: int, c: int, seed: int) -> int:
    """A fixed integer hash -> 0..255 (no RNG library, so the pixels never change)."""
    h = (x * 374761393 + y * 668265263 + c * 2246822519 + seed * 3266489917) & 0xFFFFFFFF
    h = ((h ^ (h >> 15)) * 2654435761) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF
    return (h ^ (h >> 16)) & 0xFF


def pixels(mode: str, width: int, height: int, pattern: str, seed: int) -> np.ndarray:
    """The test image, ``height x width x channels`` uint8: gradients, noise, flat blocks and hard edges."""
    ch = _CHANNELS[mode]
    out = np.zeros((height, width, ch), np.uint8)
    for y in range(height):
        for x in range(width):
            for c in range(ch):
                if pattern == "checker":
                    v = 255 if (x + y) % 2 == 0 else 0
                elif c == 3:  # alpha: transparent, half and opaque bands, so a premultiplying decoder would differ
                    v = (0, 128, 255, _hash(x, y, c, seed))[(x // 3) % 4]
                else:
                    grad = (x * 255 // max(width - 1, 1) + y * 255 // max(height - 1, 1) + 90 * c) % 256
                    noise = _hash(x, y, c, seed)
                    if width // 4 <= x < width // 2 and height // 3 <= y < height // 2:
                        v = 255 if c != 1 else 0  # a saturated block: overshoot of bicubic/lanczos
                    elif x == width * 3 // 4:
                        v = 0  # a one-pixel dark line
                    else:
                        v = (3 * grad + noise) // 4
                out[y, x, c] = v
    return out


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", binascii.crc32(kind + data) & 0xFFFFFFFF)


def _zlib_stored(raw: bytes) -> bytes:
    """A zlib stream of stored (uncompressed) deflate blocks: the same bytes with every zlib build."""
    out = bytearray(b"\x78\x01")
    blocks = [raw[i:i + 65535] for i in range(0, len(raw), 65535)] or [b""]
    for i, block in enumerate(blocks):
        out += bytes([1 if i == len(blocks) - 1 else 0]) + struct.pack("<HH", len(block), len(block) ^ 0xFFFF) + block
    return bytes(out + struct.pack(">I", zlib.adler32(raw) & 0xFFFFFFFF))


def encode_png(arr: np.ndarray, mode: str) -> bytes:
    """8-bit PNG (filter 0 on every row) of a ``H x W x C`` uint8 array."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[y].tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, _PNG_COLOR_TYPE[mode], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", _zlib_stored(raw)) + _chunk(b"IEND", b"")


def decode_rgb(png: bytes) -> np.ndarray:
    """What the Python toolkit reads from the PNG: ``Image.open(...).convert("RGB")``, H x W x 3."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"))


def transform_spec(t: EvalTransform) -> dict:
    """The transform's fields as the manifest's ``input`` spec states them (export/api.py)."""
    spec = {k: v for k, v in t.to_spec().items() if k != "preprocessing"}
    return {"img_size": t.img_size, **spec}


def sample_points(c: int, n: int = 8) -> list[tuple[int, int, int]]:
    pts = [(0, 0, 0), (1, c // 2, c // 2), (2, c - 1, c - 1), (0, c - 1, 0), (2, 0, c - 1)]
    pts += [(i % 3, _hash(i, 1, 0, 7) % c, _hash(i, 2, 0, 7) % c) for i in range(n - len(pts))]
    return pts


def expected(t: EvalTransform, rgb: np.ndarray) -> dict:
    h, w = rgb.shape[:2]
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(t.resize * long / short)
    resized = [w, h] if short == t.resize else ([t.resize, new_long] if w <= h else [new_long, t.resize])
    c = t.img_size
    left, top = int(round((max(resized[0], c) - c) / 2.0)), int(round((max(resized[1], c) - c) / 2.0))
    crop = np.asarray(t.resize_crop(rgb), dtype=np.uint8)
    x = t(rgb)
    flat = [float(v) for v in x.reshape(-1)]
    return {
        "resized": resized,
        "crop_box": [left, top, left + c, top + c],
        "shape": list(x.shape),
        "crop_sha256": hashlib.sha256(np.ascontiguousarray(crop).tobytes()).hexdigest(),
        "sum": math.fsum(flat),
        "sum_sq": math.fsum(v * v for v in flat),
        "samples": [[ch, y, xx, float(x[ch, y, xx])] for ch, y, xx in sample_points(c)],
    }


def build() -> dict:
    vectors = []
    for seed, (name, what, mode, w, h, pattern, (img, crop_pct, interp, (mean, std))) in enumerate(CASES):
        arr = pixels(mode, w, h, pattern, seed)
        png = encode_png(arr, mode)
        rgb = decode_rgb(png)
        t = EvalTransform(img, crop_pct, interp, mean, std)
        vectors.append({
            "name": name,
            "description": what,
            "mode": mode,
            "width": w,
            "height": h,
            "png": base64.b64encode(png).decode("ascii"),
            "rgb": base64.b64encode(rgb.tobytes()).decode("ascii"),
            "transform": transform_spec(t),
            "expect": expected(t, rgb),
        })
    return {
        "format": FORMAT,
        "version": VERSION,
        "description": (
            "Shared vectors of the model's evaluation transform (hydravit_edge.transform.EvalTransform): convert "
            "to RGB, resize the shorter side to transform.resize with Pillow's 8-bit resampling filter "
            "transform.interpolation (longer side int(resize * long / short); no resize when the shorter side "
            "already equals resize), centre crop transform.crop (offsets round-half-even((size - crop) / 2)), "
            "x = (pixel / 255 - mean[c]) / std[c] in float32, CHW. 'png' is the image file, 'rgb' its decoded "
            "pixels (H x W x 3, row-major); expect.crop_sha256 is the sha256 of the cropped uint8 RGB pixels "
            "(H x W x 3, exact), sum / sum_sq / samples ([c, y, x, value]) check the float tensor within "
            "'tolerance' (absolute, relative above 1)."),
        "generator": "python tests/make_transform_vectors.py --write",
        "tolerance": TOLERANCE,
        "vectors": vectors,
    }


def render() -> str:
    return json.dumps(build(), indent=1) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--write" in argv:
        PATH.write_text(text)
        print(f"wrote {PATH.relative_to(ROOT)} ({len(CASES)} vectors)")
        return 0
    if "--check" in argv:
        if not PATH.is_file() or PATH.read_text() != text:
            print(f"{PATH.relative_to(ROOT)} is stale: run python tests/make_transform_vectors.py --write")
            return 1
        print(f"{PATH.relative_to(ROOT)} is up to date")
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
