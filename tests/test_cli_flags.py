"""The command-line flags mean the same in every command.

* ``--model NAME`` names a model preset (``info``, ``speed``, ``train-speed``, ``bench run``,
  ``export-bench``); there is no ``--config``.
* ``--batch-size`` (short ``-b``) is a batch size everywhere (``speed``, ``train-speed``, ``train``,
  ``eval``, ``bench run``, ``export``'s validation batch); there is no ``--batch``, and ``-b`` is
  nothing else (``bench run --backend`` has no short form).
* ``--device-name`` names a device of the lookup table (``lut pick`` as ``bench`` and ``demo``);
  ``--device`` is where computation runs.
* A checkpoint may be a training run directory, standing for its ``best.safetensors``, else its
  ``last.safetensors`` (``eval RUN_DIR``, ``export --checkpoint RUN_DIR``, ``info --checkpoint RUN_DIR``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from helpers import tiny_model
from hydravit_edge import HydraConfig, save_checkpoint
from hydravit_edge.cli import main
from hydravit_edge.errors import HydraEdgeError, UsageError

#: small enough to export in a moment (depth 1, 4 patches)
CFG = HydraConfig(img_size=16, patch_size=8, depth=1, num_heads=4, head_dim=32, num_classes=5)


def cli(capsys, *argv) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out, err = capsys.readouterr()
    return exc.value.code or 0, out, err


def collapse(text: str) -> str:
    """Help text without rich's box drawing and line wrapping: words separated by single spaces."""
    return " ".join(re.sub(r"[\u2500-\u257f]", " ", text).split())


def flags(text: str) -> set[str]:
    """Every option token (``--name`` or ``-x``) a help text mentions."""
    return set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", text))


def help_of(capsys, monkeypatch, *command) -> str:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("TERMINAL_WIDTH", "200")
    code, out, err = cli(capsys, *command, "--help")
    assert code == 0, err
    return collapse(out)


# --------------------------------------------------------------------------- --help lists the new flags only

#: command -> (flags its help must list, flags it must not)
HELP = {
    ("info",): ({"--model", "--checkpoint"}, {"--config"}),
    ("speed",): ({"--model", "--batch-size", "-b"}, {"--config", "--batch"}),
    ("train-speed",): ({"--model", "--batch-size", "-b", "--device"}, {"--config", "--batch"}),
    ("train",): ({"--model", "--batch-size", "-b", "--device"}, {"--config", "--batch"}),
    ("eval",): ({"--batch-size", "-b", "--device"}, {"--config", "--batch"}),
    ("bench", "run"): ({"--model", "--batch-size", "-b", "--backend", "--device", "--device-name"},
                       {"--config", "--batch"}),
    ("export-bench",): ({"--model"}, {"--config"}),
    ("export",): ({"--batch-size", "-b", "--checkpoint"}, {"--batch"}),
    ("lut", "pick"): ({"--device-name"}, {"--device", "-d"}),
}


@pytest.mark.parametrize("command", list(HELP), ids=" ".join)
def test_help_lists_the_agreed_flags(capsys, monkeypatch, command):
    text = help_of(capsys, monkeypatch, *command)
    want, gone = HELP[command]
    found = flags(text)
    assert want <= found, f"{' '.join(command)} --help lacks {sorted(want - found)}"
    assert not gone & found, f"{' '.join(command)} --help still lists {sorted(gone & found)}"


def test_bench_run_short_b_is_the_batch_size_not_the_backend(capsys, monkeypatch):
    text = help_of(capsys, monkeypatch, "bench", "run")
    assert "--batch-size -b" in text and "--backend -b" not in text


def test_export_help_says_a_run_directory_is_accepted(capsys, monkeypatch):
    text = help_of(capsys, monkeypatch, "export")
    assert "run directory" in text and "best.safetensors" in text


def test_export_bench_script_takes_model(capsys):
    from hydravit_edge.bench import export_bench

    with pytest.raises(SystemExit) as exc:
        export_bench.main(["--help"])
    assert exc.value.code == 0
    found = flags(capsys.readouterr().out)
    assert "--model" in found and "--config" not in found
    with pytest.raises(UsageError, match="unknown model preset 'huge'"):
        export_bench.main(["--model", "huge"])
    with pytest.raises(SystemExit):  # argparse: unrecognised argument
        export_bench.main(["--config", "tiny"])
    capsys.readouterr()


# --------------------------------------------------------------------------- the flags do what they say

@pytest.fixture()
def captured_bench(monkeypatch):
    """``bench run`` up to the harness: records what it was asked to do, then stops."""
    from hydravit_edge.bench import harness

    seen: dict = {}

    def fake_run_bench(export_dir, **kwargs):
        seen.update(kwargs, export_dir=export_dir)
        raise HydraEdgeError("stopped by the test")

    monkeypatch.setattr(harness, "run_bench", fake_run_bench)
    return seen


@pytest.mark.parametrize("argv", [["bench", "run"], ["bench"]], ids=["bench run", "bench"])
def test_bench_run_b_is_the_batch_size(capsys, captured_bench, argv):
    code, _, err = cli(capsys, *argv, "--backend", "torch", "--model", "tiny", "-b", "4")
    assert code == 1 and "stopped by the test" in err
    assert captured_bench["settings"].batch == 4
    assert captured_bench["backend_names"] == ["torch"] and captured_bench["config_name"] == "tiny"
    captured_bench.clear()
    code, _, _ = cli(capsys, *argv, "--batch-size", "6")
    assert code == 1 and captured_bench["settings"].batch == 6


def test_bench_run_old_flags_are_gone(capsys, captured_bench):
    code, _, err = cli(capsys, "bench", "run", "-b", "onnxruntime")  # -b is no longer --backend
    assert code == 2 and "Invalid value for '--batch-size' / '-b'" in collapse(err)
    for old in (["--batch", "4"], ["--config", "tiny"]):
        code, _, err = cli(capsys, "bench", "run", *old)
        assert code == 2 and "No such option" in err
    assert not captured_bench


def test_speed_and_train_speed_take_batch_size_and_model(capsys):
    for command in ("speed", "train-speed"):
        code, _, err = cli(capsys, command, "--model", "tiny", "--batch-size", "0")
        assert code == 2 and "--batch-size" in err and ">= 1" in err
        code, _, err = cli(capsys, command, "-b", "0")
        assert code == 2 and "--batch-size" in err
        code, _, err = cli(capsys, command, "--model", "huge")
        assert code == 2 and "unknown model preset 'huge'" in err
        for old in (["--batch", "4"], ["--config", "tiny"]):
            code, _, err = cli(capsys, command, *old)
            assert code == 2 and "No such option" in err


def test_info_takes_model(capsys):
    code, out, _ = cli(capsys, "info", "--model", "tiny", "--heads", "2", "--json")
    assert code == 0 and json.loads(out)["config"]["num_heads"] == 12
    code, _, err = cli(capsys, "info", "--config", "tiny")
    assert code == 2 and "No such option" in err


def test_lut_pick_takes_device_name(capsys, tmp_path):
    vectors = json.loads((Path(__file__).parent / "policy_vectors.json").read_text())
    path = tmp_path / "lut.json"
    path.write_text(json.dumps(vectors["luts"]["A"]))  # devices fast-phone (the first) and slow-board
    code, out, err = cli(capsys, "lut", "pick", "--lut", str(path), "--device-name", "slow-board", "--battery", "50",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["device"] == "slow-board"
    for old in (["--device", "slow-board"], ["-d", "slow-board"]):
        code, _, err = cli(capsys, "lut", "pick", "--lut", str(path), *old)
        assert code == 2 and "No such option" in err


# --------------------------------------------------------------------------- a run directory is a checkpoint

@pytest.fixture()
def run_dir(tmp_path):
    """A training run directory: last.safetensors (5 classes) and best.safetensors (7 classes)."""
    run = tmp_path / "runs" / "r1"
    save_checkpoint(tiny_model(CFG), run / "last.safetensors")
    save_checkpoint(tiny_model(HydraConfig(**{**CFG.to_dict(), "num_classes": 7})), run / "best.safetensors")
    return run


def test_resolve_checkpoint(run_dir, tmp_path):
    from hydravit_edge.checkpoints import resolve_checkpoint

    assert resolve_checkpoint(run_dir) == run_dir / "best.safetensors"
    assert resolve_checkpoint(str(run_dir / "last.safetensors")) == run_dir / "last.safetensors"
    assert resolve_checkpoint(tmp_path / "missing.pt") == tmp_path / "missing.pt"  # files are the loader's business
    (run_dir / "best.safetensors").unlink()
    assert resolve_checkpoint(run_dir) == run_dir / "last.safetensors"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="without best.safetensors or last.safetensors"):
        resolve_checkpoint(empty)


def test_info_checkpoint_accepts_a_run_directory(capsys, run_dir):
    code, out, err = cli(capsys, "info", "--checkpoint", str(run_dir), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["source"].endswith("best.safetensors") and data["config"]["num_classes"] == 7


def test_export_checkpoint_accepts_a_run_directory(capsys, run_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out_dir = tmp_path / "exports" / "from-run-dir"
    code, out, err = cli(capsys, "export", "--checkpoint", str(run_dir), "--target", "onnx", "--heads", "2,4",
                         "-b", "2", "--out", str(out_dir))
    assert code == 0, err
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "checkpoint"
    assert manifest["source"]["path"].endswith("runs/r1/best.safetensors")
    assert manifest["heads"] == [2, 4] and manifest["model"]["config"]["num_classes"] == 7
    assert manifest["reference"]["batch"] == 2  # -b: the validation batch

    (run_dir / "best.safetensors").unlink()  # then the run's last checkpoint; default output named after the run
    code, _, err = cli(capsys, "export", "-c", str(run_dir), "-t", "onnx", "--heads", "2", "--no-validate")
    assert code == 0, err
    made = [p for p in (tmp_path / "exports").iterdir() if p.name != "from-run-dir"]
    assert len(made) == 1 and made[0].name.startswith("r1-")
    manifest = json.loads((made[0] / "manifest.json").read_text())
    assert manifest["source"]["path"].endswith("runs/r1/last.safetensors")
    assert manifest["model"]["config"]["num_classes"] == 5


def test_export_checkpoint_run_directory_errors(capsys, tmp_path):
    empty = tmp_path / "runs" / "empty"
    empty.mkdir(parents=True)
    code, _, err = cli(capsys, "export", "--checkpoint", str(empty), "-t", "onnx")
    assert code == 2 and "without best.safetensors or last.safetensors" in err
    code, _, err = cli(capsys, "export", "--checkpoint", str(tmp_path / "nope"), "-t", "onnx")
    assert code == 2 and "no such checkpoint file or run directory" in err
    code, _, err = cli(capsys, "export", "--checkpoint", str(empty), "--batch", "2")
    assert code == 2 and "No such option" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing written
