"""What `train` checks before it starts (issue 15 findings 4, 5 and 11): unreadable images are
named up front (or skipped with --skip-bad-images), a run that cannot start leaves no run
directory, a mismatched --init fails before saying anything, and the time estimate is printed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hydravit_edge.cli import main
from hydravit_edge.train import TrainConfig, train
from hydravit_edge.train.image_check import find_unreadable, unreadable_image
from hydravit_edge.train.progress import TimeEstimate, format_duration


def cli(capsys, *argv) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def png_folder(root: Path, classes=("cat", "dog"), per_class=4) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return root


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def train_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(root), "--model", "tiny", "--img-size", "8", "--recipe", "quick", "--epochs", "1",
            "--batch-size", "4", "--heads", "1..2", "--workers", "0", "--quiet", "--out", str(out), *extra]


def test_unreadable_image_says_why(tmp_path):
    root = png_folder(tmp_path / "d")
    good = root / "train" / "cat" / "0.png"
    assert unreadable_image(str(good)) is None
    bad = root / "train" / "cat" / "1.png"
    truncate(bad)
    (root / "train" / "cat" / "2.png").write_bytes(b"not an image")
    found = find_unreadable([str(p) for p in sorted((root / "train" / "cat").iterdir())])
    assert [Path(p).name for p, _ in found] == ["1.png", "2.png"]
    assert all(reason for _, reason in found)


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_corrupt_image_stops_before_training_naming_the_file(tmp_path, capsys, split):
    root = png_folder(tmp_path / "d")
    truncate(root / split / "dog" / "3.png")
    out = tmp_path / "run"
    code, _, err = cli(capsys, *train_args(root, out))
    assert code != 0
    said = " ".join(err.split())
    assert f"{split}/dog/3.png" in said and "--skip-bad-images" in said
    assert "Traceback" not in err
    assert not out.exists()  # nothing written: no half-made run directory


def test_skip_bad_images_trains_without_them_and_lists_them(tmp_path, capsys):
    root = png_folder(tmp_path / "d")
    truncate(root / "train" / "dog" / "3.png")
    out = tmp_path / "run"
    code, stdout, err = cli(capsys, *train_args(root, out, "--skip-bad-images"))
    assert code == 0, err
    said = " ".join((stdout + err).split())
    assert "train/dog/3.png" in said and "leaving out 1" in said
    assert (out / "best.safetensors").is_file()


@pytest.mark.parametrize("break_it", ["no_val", "empty_class", "class_mismatch"])
def test_a_run_that_cannot_start_leaves_no_run_directory(tmp_path, capsys, break_it):
    import shutil

    root = png_folder(tmp_path / "d")
    if break_it == "no_val":
        shutil.rmtree(root / "val")
    elif break_it == "empty_class":
        for f in (root / "train" / "dog").iterdir():
            f.unlink()
    else:
        (root / "val" / "dog").rename(root / "val" / "bird")
    out = tmp_path / "run"
    code, _, err = cli(capsys, *train_args(root, out))
    assert code != 0 and err.strip()
    assert "Traceback" not in err
    assert not out.exists()


def test_a_mismatched_init_fails_first_and_leaves_nothing(tmp_path, capsys):
    from hydravit_edge import HydraViT, save_checkpoint
    from hydravit_edge.config import preset

    root = png_folder(tmp_path / "d", classes=("a", "b", "c"))
    # another depth and 5 classes: the classifier alone would be refreshed, the blocks cannot load
    other = HydraViT(preset("tiny").replace(img_size=8, depth=2, num_classes=5))
    ckpt = tmp_path / "other.safetensors"
    save_checkpoint(other, ckpt)
    out = tmp_path / "run"
    code, stdout, err = cli(capsys, *train_args(root, out, "--init", str(ckpt)))
    assert code != 0
    assert "fresh classifier" not in " ".join((stdout + err).split())  # said only once the rest has loaded
    assert not out.exists()


def test_a_matching_init_with_other_classes_says_fresh_classifier(tmp_path, capsys):
    from hydravit_edge import HydraViT, save_checkpoint
    from hydravit_edge.config import preset

    root = png_folder(tmp_path / "d", classes=("a", "b", "c"))
    other = HydraViT(preset("tiny").replace(img_size=8, num_classes=5))
    ckpt = tmp_path / "other.safetensors"
    save_checkpoint(other, ckpt)
    out = tmp_path / "run"
    code, stdout, err = cli(capsys, *train_args(root, out, "--init", str(ckpt)))
    assert code == 0, err
    assert "fresh classifier" in " ".join((stdout + err).split()) and (out / "last.safetensors").is_file()


def test_train_prints_a_time_estimate(tmp_path):
    from rich.console import Console

    root = png_folder(tmp_path / "d", per_class=12)
    log = Console(record=True, width=200)
    train(TrainConfig(data=str(root), model="tiny", img_size=8, recipe="quick", epochs=2, batch_size=4,
                      heads="1..2", workers=0, progress=False, out=str(tmp_path / "run")), log=log)
    text = log.export_text()
    assert "estimated" in text and "per epoch" in text and "for the 2 epochs left" in text


def test_time_estimate_arithmetic():
    est = TimeEstimate(steps_per_epoch=100, epochs_left=300, steps=2)
    est.t_first = 0.0
    est.n = 1
    est.seconds_per_step = 0.5
    assert est.epoch_seconds == 50 and est.run_seconds == 15000
    assert "50 s per epoch" in est.message() and "4 h 10 min for the 300 epochs left" in est.message()
    assert format_duration(59) == "59 s" and format_duration(3600 * 25) == "25 h" and format_duration(3600 * 75) == "3 d 3 h"


def test_help_says_which_preset_fits_which_data(capsys):
    code, out, _ = cli(capsys, "train", "--help")
    assert code == 0
    flat = " ".join(out.split())
    assert "--skip-bad-images" in flat
    assert "small image folders" in flat and "ImageNet-scale" in flat
