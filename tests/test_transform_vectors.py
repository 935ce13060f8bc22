"""The evaluation transform's shared vectors (tests/transform_vectors.json), Python side.

The same file is checked by the Kotlin policy module (PreprocessTest, run by
tests/test_kotlin_policy.py) and the Swift package (PreprocessVectorTests): image bytes in,
the uint8 crop's sha256 and the float tensor's checksums out.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import re
import shutil
import subprocess

import numpy as np
import PIL
import pytest
from PIL import Image

import make_transform_vectors as gen
from hydravit_edge.transform import EvalTransform

pytestmark = pytest.mark.skipif(int(PIL.__version__.split(".")[0]) < 13,
                                reason="the vectors follow Pillow 13's resampling (pass order)")

DATA = json.loads(gen.PATH.read_text())
VECTORS = DATA["vectors"]


def _close(got: float, want: float) -> bool:
    return abs(got - want) <= DATA["tolerance"] * max(1.0, abs(want))


def test_committed_file_is_what_the_generator_writes():
    assert gen.PATH.read_text() == gen.render(), "stale: run python tests/make_transform_vectors.py --write"


def test_the_vectors_cover_modes_filters_and_directions():
    assert DATA["format"] == gen.FORMAT and DATA["version"] == gen.VERSION
    assert {v["mode"] for v in VECTORS} >= {"RGB", "L", "RGBA"}
    interp = {(v["transform"]["interpolation"], v["transform"]["crop_pct"]) for v in VECTORS}
    assert {("bicubic", 0.875), ("bilinear", 1.0)} <= interp
    assert {v["transform"]["interpolation"] for v in VECTORS} >= {"lanczos", "hamming", "box"}
    short = [(min(v["width"], v["height"]), v["transform"]["resize"]) for v in VECTORS]
    assert any(s < r for s, r in short) and any(s > r for s, r in short) and any(s == r for s, r in short)
    assert any(v["width"] != v["height"] for v in VECTORS)
    # Pillow >= 13 runs the vertical pass first when the height shrinks more than twice the width
    assert any(v["height"] - v["expect"]["resized"][1] > 2 * (v["width"] - v["expect"]["resized"][0]) > 0
               for v in VECTORS)
    # a crop offset of x.5 (round half to even)
    assert any((r - v["transform"]["crop"]) % 2 == 1 and ((r - v["transform"]["crop"]) // 2) % 2 == 0
               for v in VECTORS for r in v["expect"]["resized"])


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
def test_eval_transform_gives_the_expected_values(vec):
    png = base64.b64decode(vec["png"])
    rgb = np.frombuffer(base64.b64decode(vec["rgb"]), np.uint8).reshape(vec["height"], vec["width"], 3)
    with Image.open(io.BytesIO(png)) as im:
        assert im.mode == vec["mode"] and im.size == (vec["width"], vec["height"])
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), rgb)

    spec = vec["transform"]
    t = EvalTransform.from_spec(spec)
    assert (t.resize, t.img_size, t.interpolation) == (spec["resize"], spec["crop"], spec["interpolation"])
    want = vec["expect"]
    for source in (Image.open(io.BytesIO(png)), rgb):  # the file as decoded, and the decoded pixels
        crop = np.asarray(t.resize_crop(source))
        assert crop.shape == (spec["crop"], spec["crop"], 3)
        assert hashlib.sha256(crop.tobytes()).hexdigest() == want["crop_sha256"]
        x = t(source)
        assert list(x.shape) == want["shape"] and x.dtype == np.float32
        flat = x.astype(np.float64).reshape(-1)
        assert _close(float(flat.sum()), want["sum"]) and _close(float((flat * flat).sum()), want["sum_sq"])
        for c, y, xx, value in want["samples"]:
            assert _close(float(x[c, y, xx]), value), (c, y, xx)

    # the crop box the vector states is where the crop comes from
    left, top, right, bottom = want["crop_box"]
    w, h = want["resized"]
    full = rgb if (w, h) == (vec["width"], vec["height"]) else np.asarray(
        Image.fromarray(rgb).resize((w, h), getattr(Image.Resampling, spec["interpolation"].upper())))
    assert hashlib.sha256(np.ascontiguousarray(full[top:bottom, left:right]).tobytes()).hexdigest() == \
        want["crop_sha256"]


def test_a_wrong_pixel_changes_the_checksums():
    vec = VECTORS[0]
    rgb = np.frombuffer(base64.b64decode(vec["rgb"]), np.uint8).reshape(vec["height"], vec["width"], 3).copy()
    y, x = vec["height"] // 2, vec["width"] // 2
    rgb[y, x, 0] = 255 - rgb[y, x, 0]
    t = EvalTransform.from_spec(vec["transform"])
    assert hashlib.sha256(np.asarray(t.resize_crop(rgb)).tobytes()).hexdigest() != vec["expect"]["crop_sha256"]
    assert not math.isclose(float(t(rgb).astype(np.float64).sum()), vec["expect"]["sum"], rel_tol=0, abs_tol=1e-9)


@pytest.mark.skipif(shutil.which("java") is None or shutil.which("make") is None,
                    reason="the Kotlin policy module's tests need java and make (mk/kotlin.mk)")
def test_kotlin_checks_every_vector_and_fails_on_a_wrong_one(tmp_path):
    """The Kotlin side (android_demo/policy PreprocessTest) reads this file; a wrong sha256 fails it."""
    bad = json.loads(gen.PATH.read_text())
    bad["vectors"][2]["expect"]["crop_sha256"] = "0" * 64
    bad_path = tmp_path / "transform_vectors.json"
    bad_path.write_text(json.dumps(bad))
    proc = subprocess.run(["make", "--no-print-directory", "-f", str(gen.ROOT / "mk" / "kotlin.mk"), "kotlin-test",
                           f"KOTLIN_REPORT_OUT={tmp_path / 'kotlin-report.json'}",
                           f"KOTLIN_TRANSFORM_VECTORS={bad_path}"],
                          cwd=gen.ROOT, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    failed = re.search(r"\[\s*(\d+) tests failed\s*\]", out)
    assert failed and int(failed.group(1)) == 1, out[-3000:]
    assert f"{VECTORS[2]['name']}: sha256 of the uint8 crop" in out, out[-3000:]
    for vec in VECTORS:
        assert f"transform {vec['name']}" in out
