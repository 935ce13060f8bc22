import json

import pytest

from hydravit_edge import save_checkpoint
from hydravit_edge.cli import main
from hydravit_edge.heads import format_heads, parse_heads
from hydravit_edge.errors import UsageError
from helpers import TINY, tiny_model


def run(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


@pytest.mark.parametrize("spec,want", [("3..12", tuple(range(3, 13))), ("3,6,12", (3, 6, 12)), ("6", (6,)),
                                       (" 1..3 ", (1, 2, 3)), (5, (5,)), ([4, 2, 4], (2, 4))])
def test_parse_heads(spec, want):
    assert parse_heads(spec) == want


@pytest.mark.parametrize("spec", ["", "x", "3..", "12..3", "3,,x", "3,,6", ",3", "6,", "0", "-1..2", "1.5"])
def test_parse_heads_rejects(spec):
    with pytest.raises(UsageError):
        parse_heads(spec)


def test_parse_heads_checks_available():
    with pytest.raises(UsageError, match=r"\[13\] not available.*1\.\.12"):
        parse_heads("3..13", range(1, 13))
    assert format_heads(range(3, 13)) == "3..12" and format_heads([3, 6, 12]) == "3,6,12"


def test_info_table_default_config(capsys):
    code, out, _ = run(capsys, "info", "--heads", "3,6,12")
    assert code == 0
    assert "63.87" in out and "169.60" in out and "508.46" in out  # paper RAM column
    assert "17.564" in out and "86.57" in out


def test_info_json_from_checkpoint(capsys, tmp_path):
    path = save_checkpoint(tiny_model(), tmp_path / "m.safetensors")
    code, out, _ = run(capsys, "info", "--checkpoint", str(path), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["config"]["num_heads"] == TINY.num_heads
    assert [r["k"] for r in data["profile"]] == [1, 2, 3, 4]
    assert all(r["params"] > 0 and r["macs"] > 0 for r in data["profile"])


@pytest.mark.parametrize("argv,code,msg", [
    (["info", "--heads", "13"], 2, "not available"),
    (["info", "--heads", "abc"], 2, "cannot read heads"),
    (["info", "--heads", "0..3"], 2, ">= 1"),
    (["info", "--model", "huge"], 2, "unknown model preset"),
    (["info", "--checkpoint", "/nonexistent/x.safetensors"], 2, "no such checkpoint file"),
])
def test_info_errors(capsys, argv, code, msg):
    got, out, err = run(capsys, *argv)
    assert got == code
    assert msg in err and "Traceback" not in err


def test_info_corrupt_checkpoint_exit_code(capsys, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    code, _, err = run(capsys, "info", "--checkpoint", str(bad))
    assert code == 1 and "bad.safetensors" in err


def test_console_script_runs(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("hydravit-edge")
    res = subprocess.run([str(exe), "info", "--model", "tiny", "--heads", "2..3", "--json"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert [r["k"] for r in json.loads(res.stdout)["profile"]] == [2, 3]
    res = subprocess.run([str(exe), "info", "--heads", "99"], capture_output=True, text=True)
    assert res.returncode == 2 and "error:" in res.stderr and "Traceback" not in res.stderr


def test_info_refuses_a_training_state_file(tmp_path, capsys):
    """`info -c RUN/state.pt` used to describe a wrong model (3 heads x 64 dims for a 12 x 16 model)."""
    import torch

    model = tiny_model()
    state = {"version": 1, "epoch": 1, "sampler": {"step": 3}, "model": model.state_dict(), "ema": None,
             "optimizer": {"state": {}, "param_groups": []}, "scheduler": {}, "rng": {}, "world_size": 1}
    torch.save(state, tmp_path / "state.pt")
    code, _, err = run(capsys, "info", "-c", str(tmp_path / "state.pt"))
    assert code != 0 and "training state file" in err and "best.safetensors" in err


def test_written_files_follow_the_umask(tmp_path):
    """Run files, reports and lut.json were written 0600 (mkstemp's mode); now as open() would: 0666 & ~umask."""
    import os
    import stat

    from hydravit_edge.fileio import atomic_write_text

    old = os.umask(0o022)
    try:
        ckpt = save_checkpoint(tiny_model(), tmp_path / "m.safetensors")
        text = atomic_write_text(tmp_path / "r" / "report.json", "{}\n")
    finally:
        os.umask(old)
    for p in (ckpt, text):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p


def test_runtime_side_imports_no_training_stack():
    """What the base install runs (CLI, runtime, predict, policy) must not import torch, timm or onnx."""
    import subprocess
    import sys

    code = ("import sys, hydravit_edge.cli, hydravit_edge.runtime, hydravit_edge.predict, hydravit_edge.policy; "
            "bad = sorted(m for m in ('torch', 'timm', 'onnx', 'executorch', 'coremltools', 'matplotlib') "
            "if m in sys.modules); print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_missing_extra_is_one_clear_line(monkeypatch, capsys):
    import hydravit_edge.train.cli as tcli

    def boom(*a, **k):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr("hydravit_edge.train.evaluation.evaluate", boom)
    code, _, err = run(capsys, "eval", "runs/x", "--data", "digits")
    assert code == 1 and "pip install 'hydravit-edge[train]'" in err and "Traceback" not in err
    assert tcli is not None


def test_empty_heads_is_an_error_everywhere(capsys):
    """`--heads ""` meant every k in `info` and was an error in `export`: an error in both now."""
    code, _, err = run(capsys, "info", "--heads", "")
    assert code == 2 and "empty heads" in err


@pytest.mark.parametrize("argv", [
    ["info", "-c", "{missing}/m.safetensors"],
    ["eval", "{missing}/m.safetensors", "--data", "digits"],
    ["export", "--checkpoint", "{missing}/m.safetensors", "--target", "onnx"],
    ["train", "--data", "digits", "--init", "{missing}/m.safetensors", "--out", "{missing}/run"],
    ["bench", "{missing}/exp"],
    ["predict", "{missing}/exp", "x.png"],
    ["lut", "show", "{missing}/lut.json"],
], ids=lambda a: a[0] + (" " + a[1] if a[1] == "show" else ""))
def test_a_missing_path_is_exit_2_everywhere(argv, tmp_path, capsys):
    """A path the user named that does not exist: exit 2 in every command (was 1 in info/eval, 2 in export/train)."""
    code, _, err = run(capsys, *[a.format(missing=tmp_path / "nope") for a in argv])
    assert code == 2 and "nope" in err and "Traceback" not in err
