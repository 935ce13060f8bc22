"""The model's evaluation transform: recorded by training, carried by the manifest, applied by every runtime.

Trial findings 1-3 of the "from images to answers" issue: a model evaluated through timm's
Resize(img/crop_pct) + CenterCrop must be deployed with that transform (the manifest used to say
"resize to img_size"); eval and bench accuracy come from the model's own dataset.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hydravit_edge import HydraConfig
from hydravit_edge.errors import UsageError
from hydravit_edge.transform import EvalTransform, load_image


def _timm(t: EvalTransform):
    from timm.data import create_transform

    return create_transform(t.img_size, is_training=False, crop_pct=t.crop_pct, interpolation=t.interpolation,
                            mean=t.mean, std=t.std)


def _images():
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8), "RGB")
    grey = Image.fromarray(rng.integers(0, 255, (64, 41), dtype=np.uint8), "L")
    rgba = Image.fromarray(rng.integers(0, 255, (28, 28, 4), dtype=np.uint8), "RGBA")
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (900, 1200, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    big = Image.open(io.BytesIO(buf.getvalue()))
    return {"rgb": rgb, "grey": grey, "rgba": rgba, "jpeg": big}


@pytest.mark.parametrize("t", [EvalTransform(28, 0.875, "bicubic", (0.5,) * 3, (0.25,) * 3),
                               EvalTransform(16, 1.0, "bilinear", (0.5,) * 3, (0.5,) * 3),
                               EvalTransform(224)], ids=["28-bicubic-0.875", "16-bilinear-1.0", "imagenet"])
def test_equals_timm_create_transform(t):
    ref = _timm(t)
    for name, img in _images().items():
        want = ref(img.convert("RGB")).numpy()
        got = t(img)
        assert got.shape == (3, t.img_size, t.img_size), name
        np.testing.assert_allclose(got, want, atol=1e-6, err_msg=name)


def test_resize_follows_timm_and_bad_values_are_refused():
    assert EvalTransform(28, 0.875).resize == 32
    assert EvalTransform(224, 0.875).resize == 256
    assert EvalTransform(16, 1.0).resize == 16
    with pytest.raises(UsageError, match="crop_pct"):
        EvalTransform(28, 1.5)
    with pytest.raises(UsageError, match="interpolation"):
        HydraConfig(interpolation="cubicle")


def test_load_image_reports_bad_files(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(UsageError, match="bad.png: cannot read"):
        load_image(bad)
    with pytest.raises(UsageError, match="no such image"):
        load_image(tmp_path / "missing.png")


def _png_folder(root: Path, classes=("0", "1"), per_class=4, size=30) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (size, size + 3 * i, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A tiny model trained one epoch on a 28 px ImageFolder whose labels look like digits."""
    from hydravit_edge.train import TrainConfig, train

    tmp = tmp_path_factory.mktemp("folder-run")
    root = _png_folder(tmp / "imgs")
    result = train(TrainConfig(data=str(root), model="tiny", img_size=28, recipe="quick", epochs=1, batch_size=4,
                               heads="1..2", workers=0, progress=False, out=str(tmp / "run")))
    return root, result


def test_training_records_the_transform_and_eval_uses_the_runs_data(folder_run):
    from hydravit_edge.checkpoints import load_checkpoint
    from hydravit_edge.train.data import build_val_data
    from hydravit_edge.train.evaluation import evaluate

    root, result = folder_run
    cfg = load_checkpoint(result.best).config
    assert (cfg.crop_pct, cfg.interpolation) == (0.875, "bicubic")  # what its val images went through
    assert cfg.eval_transform.resize == 32
    # finding 3: no --data means the dataset the run was trained on, not the built-in digits
    ev = evaluate(result.best, heads="1..2")
    assert ev.data == str(root) and ev.images == 8
    # the folder validation set goes through the recorded transform, equal to the core one
    val = build_val_data(str(root), 28, cfg.mean, cfg.std, crop_pct=cfg.crop_pct, interpolation=cfg.interpolation).val
    x0, _ = val[0]
    np.testing.assert_allclose(x0.numpy(), cfg.eval_transform(val.samples[0][0]), atol=1e-6)


def test_eval_without_recorded_data_needs_data(tmp_path):
    from hydravit_edge.checkpoints import save_checkpoint
    from hydravit_edge.train.evaluation import evaluate
    from helpers import tiny_model

    path = save_checkpoint(tiny_model(), tmp_path / "m.safetensors")
    with pytest.raises(UsageError, match="does not record the dataset"):
        evaluate(path)


def test_manifest_runtime_and_bench_use_the_models_transform_and_data(folder_run, tmp_path):
    from hydravit_edge.bench.accuracy import heldout_set
    from hydravit_edge.export import export_model
    from hydravit_edge.runtime import Runtime
    from hydravit_edge.train.data import build_val_data
    from hydravit_edge.train.evaluation import evaluate

    root, result = folder_run
    rep = export_model(checkpoint=result.best, targets="onnx", mode="single", out=tmp_path / "exp")
    spec = rep.manifest["input"]
    assert (spec["resize"], spec["crop"], spec["crop_pct"], spec["interpolation"]) == (32, 28, 0.875, "bicubic")
    assert "shorter side to 32" in spec["preprocessing"]
    assert rep.manifest["source"]["data"] == str(root)

    # the runtime applies it to image files of any size: logits equal PyTorch on timm's transform
    rt = Runtime(tmp_path / "exp", backend="onnxruntime")
    files = sorted((root / "val").rglob("*.png"))
    out = rt.predict([str(f) for f in files], heads=2)
    cfg = result.config
    val = build_val_data(str(root), 28, (0.5,) * 3, (0.5,) * 3, crop_pct=0.875, interpolation="bicubic").val
    from hydravit_edge.checkpoints import load_checkpoint
    import torch

    model = load_checkpoint(result.best)
    ref = model(torch.stack([val[i][0] for i in range(len(val))]), heads=2).detach().numpy()
    np.testing.assert_allclose(out.logits, ref, atol=1e-4)
    assert cfg is not None
    # a uint8 array of any size goes through the same transform as its file
    arr = np.asarray(Image.open(files[0]).convert("RGB"))
    np.testing.assert_allclose(rt.predict(arr, heads=2).logits[0], out.logits[0], atol=1e-5)
    rt.close()

    # finding 2: bench accuracy on the model's own val/ images (labels '0', '1' look like digits: not digits)
    held, why = heldout_set(rep.manifest, rep.manifest["labels"], EvalTransform.from_spec(spec))
    assert held is not None and held.name == f"{root}/val" and len(held.labels) == 8, why
    top1 = float((ref.argmax(1) == held.labels).mean() * 100)
    assert evaluate(result.best, heads="2").rows[0]["top1"] == pytest.approx(top1)

    # the data moved away, or never recorded: no accuracy, and the reason
    moved = dict(rep.manifest, source=dict(rep.manifest["source"], data=str(tmp_path / "gone")))
    held, why = heldout_set(moved, rep.manifest["labels"], EvalTransform.from_spec(spec))
    assert held is None and "not on this machine" in why
    unknown = dict(rep.manifest, source=dict(rep.manifest["source"], data=None))
    held, why = heldout_set(unknown, rep.manifest["labels"], EvalTransform.from_spec(spec))
    assert held is None and "does not record" in why


def test_digits_model_keeps_its_digits_accuracy():
    from hydravit_edge.bench.accuracy import heldout_set
    from hydravit_edge.config import preset

    cfg = preset("tiny")
    held, why = heldout_set({"source": {"data": "digits"}}, [str(i) for i in range(10)], cfg.eval_transform)
    assert held is not None and held.name == "digits-heldout" and held.images.shape[1:] == (3, 16, 16)


def test_bench_accuracy_is_the_models_own(folder_run, tmp_path, capsys):
    """A 2-class model with labels '0', '1' trained on a folder: bench measures it on that folder, never on digits."""
    from hydravit_edge.bench.report import load_report
    from hydravit_edge.cli import main
    from hydravit_edge.export import export_model

    root, result = folder_run
    export_model(checkpoint=result.best, targets="onnx", mode="single", heads="2", out=tmp_path / "exp")
    args = ["bench", str(tmp_path / "exp"), "--runs", "2", "--warmup", "0", "--reports-dir", str(tmp_path / "r"),
            "--device-name", "box"]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code in (0, None), capsys.readouterr().err
    acc = load_report(tmp_path / "r" / "box.json")["rows"][0]["accuracy"]
    assert acc["dataset"] == f"{root}/val" and acc["samples"] == 8

    # the same export without its recorded data: no accuracy column, and --accuracy is refused
    from hydravit_edge.checkpoints import load_checkpoint

    export_model(load_checkpoint(result.best), targets="onnx", mode="single", heads="2", out=tmp_path / "anon")
    with pytest.raises(SystemExit) as exc:
        main(args[:1] + [str(tmp_path / "anon")] + args[2:] + ["--accuracy"])
    assert exc.value.code not in (0, None) and "does not record the dataset" in capsys.readouterr().err


def test_manifests_without_the_transform_read_as_they_said():
    """Older manifests said "resize to img_size": crop 1.0, bilinear (as the apps read them), not timm's default."""
    old_spec = {"img_size": 16, "mean": [0.5] * 3, "std": [0.5] * 3}
    old_config = {"img_size": 16, "mean": [0.5] * 3, "std": [0.5] * 3}
    t = EvalTransform.from_spec(old_spec, old_config)
    assert (t.crop_pct, t.interpolation, t.resize) == (1.0, "bilinear", 16)
    new = EvalTransform.from_spec(dict(old_spec, crop_pct=0.875, interpolation="bicubic"), old_config)
    assert (new.crop_pct, new.interpolation, new.resize) == (0.875, "bicubic", 18)
