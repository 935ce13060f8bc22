"""`hydravit-edge predict`: real image files through the model's transform and the runtime."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from hydravit_edge.cli import main
from helpers import TINY, tiny_model

LABELS = ("cat", "dog", "eel", "fox", "gnu")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    from hydravit_edge.export import export_model

    model = tiny_model(TINY.replace(labels=LABELS))
    out = tmp_path_factory.mktemp("predict") / "exp"
    export_model(model, targets="onnx", mode="single", heads="1,2,4", out=out)
    return out, model


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """cat/: RGB and grey PNG; dog/: RGBA PNG and a large JPEG; a corrupt file; a text file (ignored)."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    (root / "cat").mkdir()
    (root / "dog").mkdir()
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(root / "cat" / "rgb.png")
    Image.fromarray(rng.integers(0, 255, (33, 33), dtype=np.uint8), "L").save(root / "cat" / "grey.png")
    Image.fromarray(rng.integers(0, 255, (36, 30, 4), dtype=np.uint8), "RGBA").save(root / "dog" / "rgba.png")
    Image.fromarray(rng.integers(0, 255, (1200, 1600, 3), dtype=np.uint8)).save(root / "dog" / "big.jpg", quality=85)
    good = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(good, "PNG")
    (root / "dog" / "broken.png").write_bytes(good.getvalue()[:60])  # truncated
    (root / "notes.txt").write_text("not an image")
    return root


def run(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


def test_predict_json_matches_pytorch_on_timms_transform(export_dir, folder, capsys):
    from timm.data import create_transform

    exp, model = export_dir
    code, out, err = run(capsys, "predict", str(exp), str(folder), "--heads", "2", "--top", "3", "--json")
    assert code == 0, err
    data = json.loads(out)
    paths = [r["path"] for r in data["images"]]
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == ["big.jpg", "grey.png", "rgb.png", "rgba.png"]
    assert [e["path"].rsplit("/", 1)[1] for e in data["errors"]] == ["broken.png"]
    assert "skipped" in err and "broken.png" in err
    tf = create_transform(32, is_training=False, crop_pct=0.875, interpolation="bicubic", mean=TINY.mean, std=TINY.std)
    for r in data["images"]:
        x = tf(Image.open(r["path"]).convert("RGB"))[None]
        p = torch.softmax(model(x, heads=2), -1)[0].detach().numpy()
        assert r["k"] == 2 and len(r["top"]) == 3
        assert r["top"][0]["index"] == int(p.argmax()) and r["top"][0]["label"] == LABELS[int(p.argmax())]
        np.testing.assert_allclose([t["probability"] for t in r["top"]], np.sort(p)[::-1][:3], atol=1e-5)
        assert r["expected"] == r["path"].rsplit("/", 2)[1]  # folders named after labels
    s = data["summary"]
    assert s["images"] == 4 and s["unreadable"] == 1 and s["scored"] == 4
    assert s["top1_vs_folders"] == pytest.approx(100 * np.mean([r["top"][0]["label"] == r["expected"]
                                                                 for r in data["images"]]))


def test_predict_tables_and_policy_k(export_dir, folder, capsys):
    exp, _ = export_dir
    code, out, err = run(capsys, "predict", str(exp), str(folder / "cat" / "rgb.png"), str(folder / "cat"))
    assert code == 0, err
    assert out.count("probability") == 3  # a table per image (the file named twice counts twice)
    assert "k=4" in out  # no LUT, no battery: the policy runs the largest k
    assert "3 image(s)" in out


def test_predict_errors(export_dir, folder, tmp_path, capsys):
    exp, _ = export_dir
    code, _, err = run(capsys, "predict", str(exp), str(tmp_path / "none.png"))
    assert code != 0 and "no image could be read" in err and "no such file" in err
    code, _, err = run(capsys, "predict", str(exp), str(folder), "--heads", "3")
    assert code != 0 and "heads=3 is not in this artifact" in err
    code, _, err = run(capsys, "predict", str(tmp_path / "noexport"), str(folder))
    assert code != 0 and "no such export directory" in err


def test_runtime_predict_accepts_pil_paths_and_arrays(export_dir, folder):
    from hydravit_edge.runtime import Runtime

    exp, _ = export_dir
    rt = Runtime(exp)
    path = folder / "dog" / "rgba.png"
    img = Image.open(path)
    a = rt.predict(str(path), heads=4).logits
    np.testing.assert_allclose(rt.predict(img, heads=4).logits, a, atol=1e-6)
    np.testing.assert_allclose(rt.predict(np.asarray(img), heads=4).logits, a, atol=1e-6)
    np.testing.assert_allclose(rt.predict([path, path], heads=4).logits, np.concatenate([a, a]), atol=1e-6)
    rt.close()
