"""Training: k sampling, subnetwork gradients, separate heads, init, resume, data and CLI errors.

Everything runs on the embedded digits at 8x8 pixels (5 tokens) or a handful of PNGs, a
few dozen optimisation steps at most.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from hydravit_edge import UsageError, load_checkpoint, read_checkpoint
from hydravit_edge.cli import main
from hydravit_edge.model import build_timm_vit
from hydravit_edge.train import HeadSampler, TrainConfig, Trainer, evaluate, parse_weights, resume, train
from hydravit_edge.train.data import build_data
from hydravit_edge.train.recipes import get_recipe
from hydravit_edge.train.runs import RunDir, latest_checkpoint, latest_run
from hydravit_edge.train.subnet_step import full_gradient, step_tensors


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """A Trainer built directly sets torch's thread count (digits: 1); give other tests theirs back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def small(tmp_path: Path, name: str = "run", **kw) -> TrainConfig:
    """Digits at 8px through the tiny preset: 22 steps of 64 images per epoch."""
    base = dict(data="digits", img_size=8, epochs=1, batch_size=64, eval_every=1, progress=False,
                out=str(tmp_path / name))
    base.update(kw)
    return TrainConfig(**base)


def cli(capsys, *argv) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


# --------------------------------------------------------------------------- sampling

def test_uniform_sampling_distribution_and_determinism():
    s = HeadSampler(range(1, 13), seed=3)
    seq = s.sequence(0, 12000)
    freq = Counter(seq)
    assert set(freq) == set(range(1, 13))
    for k in range(1, 13):  # 1/12 = 0.0833, sd of a frequency ~0.0025
        assert abs(freq[k] / len(seq) - 1 / 12) < 0.012, (k, freq[k])
    # a pure function of (seed, step): order of queries does not matter, same seed same sequence
    assert [s.k_at(t) for t in (500, 7, 123)] == [seq[500], seq[7], seq[123]]
    assert HeadSampler(range(1, 13), seed=3).sequence(0, 200) == seq[:200]
    assert HeadSampler(range(1, 13), seed=4).sequence(0, 200) != seq[:200]
    # resuming from a saved state continues the same sequence
    a = HeadSampler(range(1, 13), seed=3)
    first = [a.next() for _ in range(50)]
    b = HeadSampler(range(1, 13), seed=3)
    b.load_state_dict(a.state_dict())
    assert first + [b.next() for _ in range(50)] == seq[:100]


def test_weighted_sampling_distribution():
    s = HeadSampler((3, 6, 12), weights=(25, 30, 45), seed=0)
    seq = s.sequence(0, 10000)
    freq = Counter(seq)
    for k, p in ((3, 0.25), (6, 0.30), (12, 0.45)):  # sd of a frequency <= 0.005
        assert abs(freq[k] / len(seq) - p) < 0.02, (k, freq[k])
    assert np.allclose(s.probs, [0.25, 0.30, 0.45])
    # weights need not sum to one
    assert HeadSampler((3, 6, 12), weights=(5, 6, 9), seed=0).sequence(0, 300) == seq[:300]
    with pytest.raises(UsageError, match="does not match"):
        HeadSampler((3, 6, 12), seed=0).load_state_dict(s.state_dict())


@pytest.mark.parametrize("spec, message", [
    ("1,2", "2 value"), ("1,-1,2", "negative"), ("0,0,0", "all zero"), ("a,b,c", "cannot read"),
    ("1,0,2", "never be trained"), ("1,inf,2", "finite"),
])
def test_bad_weights_rejected(spec, message):
    with pytest.raises(UsageError, match=message):
        parse_weights(spec, (3, 6, 12))


def test_cli_bad_weights_exit_code_2(capsys, tmp_path):
    code, _, err = cli(capsys, "train", "--data", "digits", "--heads", "3,6,12", "--weights", "25,75",
                       "--out", str(tmp_path / "r"), "--quiet")
    assert code == 2 and "--weights has 2 value(s)" in err and "Traceback" not in err
    code, _, err = cli(capsys, "train", "--heads", "3,6,12", "--weights", "1,-2,3", "--out", str(tmp_path / "r"))
    assert code == 2 and "negative" in err
    code, _, err = cli(capsys, "train", "--heads", "3,6,12", "--weights", "0,0,0", "--out", str(tmp_path / "r"))
    assert code == 2 and "all zero" in err
    code, _, err = cli(capsys, "train", "--heads", "0..3", "--out", str(tmp_path / "r"))
    assert code == 2
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- gradients

def _subnet_mask(name: str, p: torch.Tensor, k: int, hd: int, full: int, ratio: float) -> torch.Tensor:
    """Where subnetwork k may touch parameter ``name`` (derived from the issue text)."""
    e, h = hd * k, int(hd * k * ratio)  # timm's ViT of width hd*k: int(width * mlp_ratio) hidden units
    m = torch.zeros_like(p, dtype=torch.bool)
    if name in ("cls_token", "pos_embed"):
        m[..., :e] = True
    elif name.startswith("patch_embed.proj."):
        m[:e] = True
    elif name.endswith("qkv.weight"):
        for i in range(3):
            m[i * full:i * full + e, :e] = True
    elif name.endswith("qkv.bias"):
        for i in range(3):
            m[i * full:i * full + e] = True
    elif name.endswith("fc1.weight"):
        m[:h, :e] = True
    elif name.endswith("fc1.bias"):
        m[:h] = True
    elif name.endswith("fc2.weight"):
        m[:e, :h] = True
    elif name == "head.weight":
        m[:, :e] = True
    elif name == "head.bias":
        m[:] = True
    elif p.dim() == 2:  # attn.proj
        m[:e, :e] = True
    else:  # norms, proj/fc2 bias
        m[:e] = True
    return m


@pytest.mark.parametrize("k, update", [(1, "subnet"), (5, "subnet"), (12, "subnet"), (5, "full")])
def test_gradients_exactly_zero_outside_sampled_subnetwork(tmp_path, k, update):
    trainer = Trainer(small(tmp_path, drop_path=0.1, update=update).resolve())
    x, y = next(iter(trainer.train_loader))
    trainer.forward_backward(x, y, k)
    c = trainer.model_config
    if update == "subnet":  # gradients live on views sized to the subnetwork; no full-size .grad
        assert all(p.grad is None for p in trainer.model.parameters())
        grads = {n: full_gradient(p, trainer.leaves) for n, p in trainer.model.named_parameters()}
        from hydravit_edge.profile import params_for

        assert sum(t.grad.numel() for t in step_tensors(trainer.leaves, [])) == params_for(c, k)
    else:
        grads = {n: p.grad for n, p in trainer.model.named_parameters()}
    for name, p in trainer.model.named_parameters():
        g = grads[name]
        assert g is not None, name
        mask = _subnet_mask(name, p, k, c.head_dim, c.embed_dim, c.mlp_ratio)
        outside = g[~mask]
        assert outside.numel() == 0 or torch.count_nonzero(outside) == 0, name
        assert torch.count_nonzero(g[mask]) > 0, name


@pytest.mark.parametrize("update", ["subnet", "full"])
def test_subnet_update_leaves_weights_and_moments_outside_k_untouched(tmp_path, update):
    trainer = Trainer(small(tmp_path, update=update, weight_decay=0.05).resolve())
    x, y = next(iter(trainer.train_loader))
    trainer.forward_backward(x, y, 12)  # the first update of every tensor creates its optimizer state
    trainer.optimizer_step()
    model, opt, c = trainer.model, trainer.optimizer, trainer.model_config
    before = {n: (p.detach().clone(), opt.state[p]["exp_avg"].clone()) for n, p in model.named_parameters()}
    trainer.forward_backward(x, y, 3)
    trainer.optimizer_step()
    outside_moved = 0
    for name, p in model.named_parameters():
        mask = _subnet_mask(name, p, 3, c.head_dim, c.embed_dim, c.mlp_ratio)
        w0, m0 = before[name]
        assert not torch.equal(p.detach()[mask], w0[mask]), name  # subnetwork 3 was trained
        outside_moved += int((p.detach()[~mask] != w0[~mask]).sum()) + int((opt.state[p]["exp_avg"][~mask] != m0[~mask]).sum())
        assert float(opt.state[p]["step"]) == 2.0, name  # one step count per tensor, views or not
    if update == "subnet":
        assert outside_moved == 0
    else:  # AdamW's moments keep moving every parameter
        assert outside_moved > 0


# --------------------------------------------------------------------------- separate heads, init

def test_separate_heads_trained_only_when_drawn(tmp_path):
    trainer = Trainer(small(tmp_path, heads="2,4", separate_heads=True).resolve())
    model = trainer.model
    assert set(model.head_k) == {"2", "4"}
    x, y = next(iter(trainer.train_loader))
    trainer.forward_backward(x, y, 2)
    assert model.head_k["4"].weight.grad is None and model.head.weight.grad is None
    assert torch.count_nonzero(model.head_k["2"].weight.grad) > 0
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.optimizer.step()  # AdamW skips parameters without a gradient
    assert torch.equal(model.head_k["4"].weight, before["head_k.4.weight"])
    assert not torch.equal(model.head_k["2"].weight, before["head_k.2.weight"])

    result = train(small(tmp_path, "sep", heads="2,4", separate_heads=True))
    assert set(result.k_history) == {2, 4}
    loaded = load_checkpoint(result.last)
    assert loaded.config.separate_heads and loaded.config.heads == (2, 4)
    ev = evaluate(result.last, "digits")
    assert [r["k"] for r in ev.rows] == [2, 4]
    with pytest.raises(UsageError, match="not available"):
        evaluate(result.last, "digits", heads="3")


def test_init_from_narrower_checkpoint_goes_to_the_corner(tmp_path):
    cfg = small(tmp_path).resolve()
    narrow_cfg = cfg.model_config(10, None)
    torch.manual_seed(7)
    narrow = build_timm_vit(narrow_cfg, 3).eval()  # a 3-head timm ViT, 48 wide
    torch.save({"model": narrow.state_dict()}, tmp_path / "narrow.pth")
    cfg.init = str(tmp_path / "narrow.pth")
    trainer = Trainer(cfg)
    model = trainer.model.eval()
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x, heads=3), narrow(x), atol=1e-5)
        # the rest of the model keeps its own initialisation
        assert not torch.allclose(model(x, heads=4)[:, :3], narrow(x)[:, :3], atol=1e-3)
    # a checkpoint for another number of classes keeps everything but its classifier
    other = build_timm_vit(narrow_cfg.replace(num_classes=5), 3)
    torch.save(other.state_dict(), tmp_path / "five.pth")
    cfg.init = str(tmp_path / "five.pth")
    model = Trainer(cfg).model
    assert torch.equal(model.blocks[0].mlp.fc1.weight[:192, :48], other.blocks[0].mlp.fc1.weight)
    assert model.head.weight.shape == (10, 192)
    bad = small(tmp_path, init=str(tmp_path / "missing.pth"))
    with pytest.raises(UsageError, match="no such checkpoint"):
        bad.resolve()


# --------------------------------------------------------------------------- resume

class Interrupt(Exception):
    pass


def test_resume_continues_bit_for_bit(tmp_path):
    # 2 epochs x 11 steps; random affine augmentation and drop path draw from the RNGs, EMA, validation
    kw = dict(epochs=2, ema_decay=0.9, heads="1..4", batch_size=128, augment="light", drop_path=0.1)
    full = train(small(tmp_path, "full", **kw))

    def stop(epoch, step, k, loss):
        if step == 16:  # in the middle of the second epoch
            raise Interrupt

    with pytest.raises(Interrupt):
        train(small(tmp_path, "cut", **kw), on_step=stop)
    run = RunDir(tmp_path / "cut")
    assert torch.load(run.state, weights_only=True)["epoch"] == 1
    resumed = resume(run.path, progress=False)
    assert resumed.k_history == full.k_history[11:]
    a, b = read_checkpoint(full.last, prefer_ema=False), read_checkpoint(resumed.last, prefer_ema=False)
    assert a.state_dict.keys() == b.state_dict.keys()
    for key in a.state_dict:
        assert torch.equal(a.state_dict[key], b.state_dict[key]), key
    sa = torch.load(full.run_dir / "state.pt", weights_only=True)
    sb = torch.load(run.state, weights_only=True)
    for key in sa["ema"]:
        assert torch.equal(sa["ema"][key], sb["ema"][key]), key
    for i, st in sa["optimizer"]["state"].items():
        assert torch.equal(st["exp_avg_sq"], sb["optimizer"]["state"][i]["exp_avg_sq"])
    assert sa["sampler"] == sb["sampler"]
    epochs = [r["epoch"] for r in run.read_metrics() if r["event"] == "epoch"]
    assert epochs == [1, 2]
    assert resumed.val == full.val
    # the finished run says so instead of training again; --resume refuses other options
    assert resume(run.path, progress=False).steps_done == 22


def test_resume_of_a_run_killed_in_its_first_epoch_starts_it_again(tmp_path):
    kw = dict(epochs=1, heads="1..2", batch_size=128)
    full = train(small(tmp_path, "full", **kw))

    def stop(epoch, step, k, loss):
        if step == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(small(tmp_path, "cut", **kw), on_step=stop)
    assert not (tmp_path / "cut" / "state.pt").exists()
    resumed = resume(tmp_path / "cut", progress=False)
    assert resumed.k_history == full.k_history
    a, b = read_checkpoint(full.last).state_dict, read_checkpoint(resumed.last).state_dict
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_cli_resume_rejects_other_options_and_missing_runs(capsys, tmp_path):
    code, _, err = cli(capsys, "train", "--resume", str(tmp_path), "--epochs", "3")
    assert code == 2 and "drop --epochs" in err
    code, _, err = cli(capsys, "train", "--resume", str(tmp_path / "nope"))
    assert code == 2 and "no such run directory" in err


# --------------------------------------------------------------------------- run dir, eval, CLI

def test_train_cli_run_dir_layout_and_eval(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "train", "--data", "digits", "--img-size", "8", "--epochs", "1", "--heads", "12",
                         "--batch-size", "64", "--quiet", "--json")
    assert code in (0, None), err
    payload = json.loads(out)
    run_dir = Path(payload["run_dir"])
    assert run_dir.parent == Path("runs")
    assert {p.name for p in run_dir.iterdir()} == {"config.json", "metrics.jsonl", "last.safetensors",
                                                   "best.safetensors", "state.pt"}
    assert latest_run("runs").resolve() == run_dir.resolve()
    assert latest_checkpoint("runs").name == "best.safetensors"
    meta = read_checkpoint(run_dir / "best.safetensors").metadata
    assert meta["epoch"] == 1 and meta["labels"] == [str(i) for i in range(10)]
    assert set(meta["val"]["model"]) == {"12"}
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["heads"] == [12] and config["model"]["img_size"] == 8
    # a run dir is never overwritten
    code, _, err = cli(capsys, "train", "--img-size", "8", "--epochs", "1", "--out", str(run_dir), "--quiet")
    assert code == 2 and "already holds a training run" in err
    # eval: a vanilla (k=12 only) model can still be evaluated at every k
    code, out, err = cli(capsys, "eval", str(run_dir), "--heads", "1..12", "--json")
    assert code in (0, None), err
    res = json.loads(out)
    assert [r["k"] for r in res["per_k"]] == list(range(1, 13)) and res["weights"] == "model"
    assert all(0 <= r["top1"] <= r["top5"] <= 100 for r in res["per_k"])
    code, out, err = cli(capsys, "eval", str(run_dir), "--heads", "1,12", "--profile")
    assert code in (0, None) and "top-1" in out and "MACs" in out
    code, _, err = cli(capsys, "eval", str(run_dir), "--heads", "13")
    assert code == 2
    code, _, err = cli(capsys, "eval", str(tmp_path / "missing.safetensors"))
    assert code == 2 and "no such checkpoint" in err


def _png_folder(root: Path, classes=("cat", "dog"), per_class=4, splits=("train", "val")) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                arr = rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / c / f"{i}.png")
    return root


@pytest.mark.parametrize("recipe", ["quick", "deit"])
def test_image_folder_training_with_both_recipes(tmp_path, recipe):
    root = _png_folder(tmp_path / "imgs")
    result = train(TrainConfig(data=str(root), model="tiny", img_size=8, recipe=recipe, epochs=1, batch_size=4,
                               heads="1..3", workers=0, progress=False, out=str(tmp_path / recipe)))
    assert result.steps_done == 2
    cfg = load_checkpoint(result.last).config
    assert cfg.labels == ("cat", "dog") and cfg.num_classes == 2
    if recipe == "deit":
        trainer = Trainer(result.config)
        assert trainer.mixup is not None and trainer.ema is not None
        assert type(trainer.criterion).__name__ == "SoftTargetCrossEntropy"
        assert trainer.cfg.lr == pytest.approx(5e-4 * 4 / 512)
        assert read_checkpoint(result.last).used_ema
    assert [r["k"] for r in evaluate(result.best, str(root), heads="1..3").rows] == [1, 2, 3]


def test_bad_data_paths_are_clear_errors(tmp_path, capsys):
    recipe = get_recipe("quick")

    def err(path):
        with pytest.raises(UsageError) as e:
            build_data(str(path), 8, (0.5,) * 3, (0.5,) * 3, recipe)
        return str(e.value)

    assert "no such directory" in err(tmp_path / "missing")
    (tmp_path / "file.txt").write_text("x")
    assert "is a file" in err(tmp_path / "file.txt")
    (tmp_path / "empty").mkdir()
    assert "no train/ subfolder" in err(tmp_path / "empty")
    (tmp_path / "flat" / "train").mkdir(parents=True)
    (tmp_path / "flat" / "val").mkdir(parents=True)
    (tmp_path / "flat" / "train" / "img.png").write_bytes(b"")
    assert "no class subfolders" in err(tmp_path / "flat")
    (tmp_path / "noimg" / "train" / "a").mkdir(parents=True)
    (tmp_path / "noimg" / "val" / "a").mkdir(parents=True)
    assert "hold no images" in err(tmp_path / "noimg")
    root = _png_folder(tmp_path / "mism", splits=("train",))
    _png_folder(root, classes=("cat", "cow"), splits=("val",))
    assert "different classes" in err(root)
    code, _, e = cli(capsys, "train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r"))
    assert code == 2 and "no such directory" in e
    code, _, e = cli(capsys, "eval", str(tmp_path / "x.safetensors"), "--data", str(tmp_path / "empty"))
    assert code == 2 and "x.safetensors" in e  # the checkpoint is checked first


def test_digits_split_is_fixed_and_upscaled():
    from hydravit_edge.train.data import DigitsDataset

    a, b = DigitsDataset("train", 16), DigitsDataset("val", 16)
    assert len(a) + len(b) == 1797 and len(b) == 359
    x, y = a[0]
    assert x.shape == (3, 16, 16) and 0 <= y <= 9 and a.classes == [str(i) for i in range(10)]
    assert torch.equal(DigitsDataset("val", 16).images, b.images)
    assert sorted(Counter(int(t) for t in b.targets).values())[0] >= 35  # stratified


def test_train_speed_child_measures_both_models():
    from hydravit_edge.train.speed import _child

    for update in ("subnet", "full"):
        r = _child("tiny", 2, update, batch=2, steps=2, device="cpu", img_size=8, threads=1)
        for name in ("hydra", "timm"):
            assert r[name]["step_ms"] >= r[name]["fwd_bwd_ms"] > 0
        assert r["step_ratio"] > 0 and r["fwd_bwd_ratio"] > 0 and r["cpu_step_ratio"] > 0


def test_train_speed_cli_rejects_bad_arguments(capsys):
    code, _, err = cli(capsys, "train-speed", "--heads", "13")
    assert code == 2
    code, _, err = cli(capsys, "train-speed", "--batch-size", "0")
    assert code == 2
    code, _, err = cli(capsys, "train-speed", "--model", "tiny", "--img-size", "10")
    assert code == 2 and "multiple of the patch size" in err
    code, _, err = cli(capsys, "train-speed", "--update", "some")
    assert code == 2 and "--update must be subnet or full" in err
