"""``hydravit-edge train``, ``eval`` and ``train-speed``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

import typer

from hydravit_edge.console import console, err_console
from hydravit_edge.errors import UsageError

__all__ = ["register"]


def train_cmd(
    data: str = typer.Option("digits", "--data", help="'digits' (embedded 8x8 digits) or an ImageFolder root with train/ and val/."),
    heads: Optional[str] = typer.Option(None, "--heads", help="Head counts to train: '1..12', '3,6,12' or '12' (default: every k of the model)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Sampling weights, one per head count, e.g. 25,30,45 (default: uniform)."),
    separate_heads: bool = typer.Option(False, "--separate-heads", help="One classifier per k, trained only when that k is drawn."),
    update: Optional[str] = typer.Option(None, "--update", help="subnet (default): a step updates only subnetwork k's weights and optimizer state, at subnetwork k's cost; full: an optimizer step over every parameter (zero gradient outside k)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from this checkpoint (any format load_checkpoint reads; narrower ones fill the leading corner)."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="quick (default for digits) or deit (default for image folders)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs (default: the recipe's)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Images per step and process (default: the recipe's)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (default: recipe lr x global batch / 512)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model preset: tiny (12 heads x 16 dims, depth 3, 16 px; default for digits, minutes on a CPU; with --img-size 28 --recipe quick for small image folders) or base (ViT-B/16 at 224 px, k=3/6/12 = DeiT-tiny/small/base; default for folders, ImageNet-scale data on GPUs)."),
    img_size: Optional[int] = typer.Option(None, "--img-size", help="Input size (default: the preset's)."),
    drop_path: Optional[float] = typer.Option(None, "--drop-path", help="Stochastic depth rate (default: the recipe's)."),
    ema_decay: Optional[float] = typer.Option(None, "--ema-decay", help="Model EMA decay, 0 = off (default: the recipe's)."),
    smoothing: Optional[float] = typer.Option(None, "--smoothing", help="Label smoothing (default: the recipe's)."),
    augment: Optional[str] = typer.Option(None, "--augment", help="timm (create_transform: the recipe's RandAugment, "
                                          "erasing, flips), light (small random affine) or none (default: the recipe's)."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="Validate every k each N epochs (and after the last)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Data loader processes (default: 0 for digits, otherwise 4 or the number of CPUs if fewer)."),
    skip_bad_images: bool = typer.Option(False, "--skip-bad-images", help="Leave image files Pillow cannot read out of the run (listed by path) instead of stopping before training."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads per process (default: 1 for digits, torch's choice otherwise)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of weights, data order, augmentation and the k sequence (default 0)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<YYYYmmdd-HHMMSS>)."),
    resume_dir: Optional[Path] = typer.Option(None, "--resume", help="Continue the interrupted run in this directory, with its saved settings."),
    device: Optional[str] = typer.Option(None, "--device", help="auto (CUDA when available), cpu or cuda."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    as_json: bool = typer.Option(False, "--json", help="Print the final per-k validation as JSON."),
) -> None:
    """Train universal HydraViT weights: every step trains one sampled subnetwork k.

    Runs on several GPUs or CPU processes under torchrun: `torchrun --nproc_per_node N $(which hydravit-edge) train ...`.
    """
    from hydravit_edge.train.config import TrainConfig
    from hydravit_edge.train.api import resume, train

    if resume_dir is not None:
        given = {"--data": data != "digits", "--heads": heads, "--weights": weights, "--separate-heads": separate_heads,
                 "--update": update,
                 "--init": init, "--recipe": recipe, "--epochs": epochs, "--batch-size": batch_size, "--lr": lr,
                 "--model": model, "--img-size": img_size, "--drop-path": drop_path, "--ema-decay": ema_decay,
                 "--smoothing": smoothing, "--augment": augment, "--eval-every": eval_every, "--workers": workers,
                 "--threads": threads, "--seed": seed, "--out": out, "--skip-bad-images": skip_bad_images}
        clash = [name for name, value in given.items() if value is not None and value is not False]
        if clash:
            raise UsageError(f"--resume continues the run with its saved settings; drop {', '.join(clash)}")
        result = resume(resume_dir, progress=not quiet and not as_json, device=device,
                        log=err_console if as_json else None)
    else:
        cfg = TrainConfig(
            data=data, out=str(out) if out else None, recipe=recipe, model=model, img_size=img_size, heads=heads,
            weights=weights, separate_heads=separate_heads, update=update or "subnet", init=str(init) if init else None, epochs=epochs,
            batch_size=batch_size, lr=lr, drop_path=drop_path, ema_decay=ema_decay, smoothing=smoothing,
            augment=augment, eval_every=eval_every, workers=workers, threads=threads, skip_bad_images=skip_bad_images,
            seed=0 if seed is None else seed, device=device or "auto",
            progress=not quiet and not as_json,
        )
        result = train(cfg, log=err_console if as_json else None)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only the first process reports
        return
    if as_json:
        print(json.dumps({"run_dir": str(result.run_dir), "epochs": result.epochs_done, "steps": result.steps_done,
                          "train_seconds": result.train_seconds, "best_mean_top1": result.best_score,
                          "per_k": {str(k): v for k, v in result.val.items()}}, indent=2))
        return
    console.print(f"done in {result.train_seconds:.0f} s: {result.run_dir}/best.safetensors "
                  f"(best mean top-1 over k {result.best_score:.2f}%), {result.run_dir}/last.safetensors")


def eval_cmd(
    checkpoints: List[Path] = typer.Argument(..., help="Checkpoint file(s) or run directories (their best.safetensors)."),
    data: Optional[str] = typer.Option(None, "--data", help="'digits' or an ImageFolder root with val/ "
                                       "(default: the dataset the checkpoint was trained on)."),
    heads: Optional[str] = typer.Option(None, "--heads", help="Head counts: '1..12', '3,6,12' or '6' (default: every k)."),
    ema: bool = typer.Option(True, "--ema/--no-ema", help="Use the EMA weights when the checkpoint has them."),
    batch_size: int = typer.Option(256, "--batch-size", "-b", help="Images per batch."),
    workers: int = typer.Option(0, "--workers", help="Data loader processes."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    with_profile: bool = typer.Option(False, "--profile", help="Add each k's parameters, MACs and RAM (the `info` profile)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Top-1/top-5 accuracy of every k on the validation set; several checkpoints side by side."""
    from rich.table import Table

    from hydravit_edge.checkpoints import resolve_checkpoint
    from hydravit_edge.train.evaluation import evaluate

    if device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, got {device!r}")
    results = [evaluate(resolve_checkpoint(p), data, heads, use_ema=ema, batch_size=batch_size, workers=workers,
                        device=device, progress=not as_json) for p in checkpoints]
    prof = {}
    if with_profile:
        from hydravit_edge.profile import profile

        ks_all = sorted({row["k"] for r in results for row in r.rows})
        prof = {p.k: p for p in profile(results[0].config, ks_all)}
    if as_json:
        payload = [r.as_dict() for r in results]
        if prof:
            for item in payload:
                for row in item["per_k"]:
                    row["profile"] = prof[row["k"]].as_dict()
        print(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2))
        return
    table = Table(title=f"top-1 / top-5 per k on {results[0].data} ({results[0].images} validation images)")
    table.add_column("k", justify="right")
    table.add_column("embed dim", justify="right")
    if prof:
        for col in ("params (M)", "MACs (M)", "RAM (MB)"):
            table.add_column(col, justify="right")
    for r, p in zip(results, checkpoints):
        name = f" {p}" if len(results) > 1 else ""
        table.add_column(f"top-1 %{name}", justify="right")
        table.add_column(f"top-5 %{name}", justify="right")
    ks = sorted({row["k"] for r in results for row in r.rows})
    by_k = [{row["k"]: row for row in r.rows} for r in results]
    for k in ks:
        dims = next(b[k]["embed_dim"] for b in by_k if k in b)
        cells = [str(k), str(dims)]
        if prof:
            cells += [f"{prof[k].params / 1e6:.3f}", f"{prof[k].macs / 1e6:.2f}", f"{prof[k].ram_mb:.2f}"]
        for b in by_k:
            cells += [f"{b[k]['top1']:.2f}", f"{b[k]['top5']:.2f}"] if k in b else ["", ""]
        table.add_row(*cells)
    console.print(table)
    for r in results:
        console.print(f"{r.source}: {r.weights} weights")


def train_speed_cmd(
    config_name: str = typer.Option("base", "--model", help="Model preset: base (64-dim heads, DeiT widths) or tiny."),
    heads: str = typer.Option("1,3,6,12", "--heads", help="Head counts to measure."),
    batch: int = typer.Option(16, "--batch-size", "-b", help="Images per training step."),
    img_size: Optional[int] = typer.Option(None, "--img-size", help="Input size (default: the preset's)."),
    steps: int = typer.Option(6, "--steps", help="Timed steps of each model, alternating (medians reported)."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, or auto (CPU, plus CUDA when available)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: all cores)."),
    update: str = typer.Option("subnet", "--update", help="The trainer's --update: subnet (default) or full."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Training-step time through subnetwork k of HydraViT vs a standalone timm ViT of that width.

    HydraViT takes the trainer's step (--update), the timm ViT an AdamW step over its own parameters
    (timm's create_optimizer_v2 for both); each measurement runs in its own process.
    """
    from rich.table import Table

    from hydravit_edge.config import preset
    from hydravit_edge.heads import parse_heads
    from hydravit_edge.train.speed import compare

    config = preset(config_name)
    ks = parse_heads(heads, range(1, config.num_heads + 1))
    if batch < 1 or steps < 1:
        raise UsageError("--batch-size and --steps must be >= 1")
    if img_size is not None and (img_size < config.patch_size or img_size % config.patch_size):
        raise UsageError(f"--img-size must be a positive multiple of the patch size {config.patch_size}")
    if device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, got {device!r}")
    if update not in ("subnet", "full"):
        raise UsageError(f"--update must be subnet or full, got {update!r}")
    rows = compare(config_name, ks, batch=batch, steps=steps, device=device, img_size=img_size, threads=threads,
                   progress=not as_json, update=update)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    size = img_size or config.img_size
    table = Table(title=f"training step: HydraViT subnetwork k vs standalone timm ViT of width {config.head_dim}k "
                        f"(config '{config_name}', {size}px, batch {batch}, AdamW, --update {update})")
    for col in ("device", "k", "width", "HydraViT step ms", "timm ViT step ms", "ratio",
                "fwd+bwd ratio", "CPU-time ratio"):
        table.add_column(col, justify="right")
    for r in rows:
        cpu = f"{r['cpu_step_ratio']:.3f}" if r["cpu_step_ratio"] is not None else "-"
        table.add_row(r["device"], str(r["k"]), str(r["width"]), f"{r['hydra_step_ms']:.1f}", f"{r['timm_step_ms']:.1f}",
                      f"{r['step_ratio']:.3f}", f"{r['fwd_bwd_ratio']:.3f}", cpu)
    console.print(table)
    console.print("ratio: wall time of a full step (forward, backward, AdamW: over subnetwork k's weights with "
                  "--update subnet, over every parameter with --update full); "
                  "fwd+bwd: without the optimizer; CPU-time: process CPU time of the full step, which other "
                  "processes on a shared machine disturb less (use with --threads 1).")


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("eval")(eval_cmd)
    app.command("train-speed")(train_speed_cmd)
