"""Datasets for training and evaluation.

* ``digits``: scikit-learn's embedded 8x8 handwritten digits (1797 images, no download),
  upscaled bilinearly to the model's image size, 3 channels, with a fixed stratified
  held-out split (20 % of every class, seeded) that does not depend on the training seed.
  Class labels are ``"0"`` .. ``"9"``.
* ``PATH``: an ImageFolder root with ``train/<class>/*`` and ``val/<class>/*``; images go
  through :func:`timm.data.create_transform`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from hydravit_edge.errors import UsageError

from .recipes import Recipe

__all__ = ["DataBundle", "DigitsDataset", "build_data", "build_val_data", "is_digits", "DIGITS_LABELS"]

DIGITS_LABELS = tuple(str(i) for i in range(10))
DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class DataBundle:
    """Train/validation datasets and the class labels (``train`` is None for evaluation)."""

    kind: str  # "digits" | "folder"
    source: str
    labels: tuple[str, ...]
    train: Optional[Dataset]
    val: Dataset
    #: applied by the trainer to every training batch (tensor -> tensor), e.g. digits' random affine
    batch_transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    #: the evaluation transform the validation images went through, as HydraConfig fields
    #: (``crop_pct``, ``interpolation``): the model records it and every runtime applies it
    eval_transform: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def collate_fn(self) -> Optional[Callable]:
        return _collate if self.kind == "digits" else None


def is_digits(spec: str) -> bool:
    return str(spec).strip().lower() == "digits"


# --------------------------------------------------------------------------- digits

def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's embedded digits as (images 1797x8x8 in 0..16, targets).

    Reads the CSV that ``sklearn.datasets.load_digits`` reads, straight from the installed
    package: importing scikit-learn (and scipy with it) costs seconds that a 1-minute
    training run should not pay.  Falls back to ``load_digits`` if the file moved.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for base in (spec.submodule_search_locations or []) if spec else []:
        path = Path(base) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            data = np.loadtxt(path, delimiter=",")
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    if spec is None:
        raise UsageError("--data digits needs scikit-learn (pip install scikit-learn)")
    from sklearn.datasets import load_digits  # pragma: no cover - only if the CSV moved

    d = load_digits()  # pragma: no cover
    return d.images, d.target.astype(np.int64)  # pragma: no cover


@functools.lru_cache(maxsize=1)
def _digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fixed stratified split: in every class a seeded permutation puts 20 % into validation."""
    images, target = _load_digits()
    images = (images / 16.0).astype(np.float32)
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    val_idx = []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(target == c))
        val_idx.append(idx[:int(round(DIGITS_VAL_FRACTION * len(idx)))])
    va = np.sort(np.concatenate(val_idx))
    tr = np.setdiff1d(np.arange(len(target)), va)
    return images[tr], target[tr], images[va], target[va]


@functools.lru_cache(maxsize=4)
def _digits_tensors(split: str, img_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    xtr, ytr, xva, yva = _digits_split()
    x, y = (xtr, ytr) if split == "train" else (xva, yva)
    t = torch.from_numpy(x)[:, None]
    t = torch.nn.functional.interpolate(t, size=(img_size, img_size), mode="bilinear", align_corners=False)
    t = t.clamp_(0, 1).expand(-1, 3, -1, -1).contiguous()
    return t, torch.from_numpy(y)


class DigitsDataset(Dataset):
    """The digits split as 3 x S x S images.

    With ``mean``/``std`` the images are normalised once, up front (a training batch is then
    just an index into one tensor); with ``transform`` (and ``pil=True`` for timm's PIL
    transforms) every image in [0, 1] goes through it instead.
    """

    def __init__(self, split: str, img_size: int, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None, transform: Optional[Callable] = None,
                 pil: bool = False) -> None:
        if split not in ("train", "val"):
            raise ValueError(split)
        images, self.targets = _digits_tensors(split, img_size)
        if mean is not None and std is not None:
            m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
            s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
            images = (images - m) / s
        self.images = images
        self.transform = transform
        self.pil = pil
        self.classes = list(DIGITS_LABELS)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        img = self.images[i]
        if self.pil:
            from PIL import Image

            img = Image.fromarray((img.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy(), "RGB")
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[i])

    def __getitems__(self, indices: list[int]):
        """Whole batches at once (the DataLoader uses this when present)."""
        if self.transform is not None or self.pil:
            return [self[i] for i in indices]
        idx = torch.as_tensor(indices)
        return [(self.images[idx], self.targets[idx])]


def _collate(batch):
    """Collate for DigitsDataset: a pre-stacked batch passes through, single items stack."""
    from torch.utils.data import default_collate

    if len(batch) == 1 and batch[0][0].dim() == 4:
        return batch[0]
    return default_collate(batch)


class RandomAffineBatch:
    """Random rotation/shift/scale per image of a batch, in one ``grid_sample`` call.

    Small rotations (``degrees``), shifts (fraction ``translate`` of the side) and scalings
    keep a digit a digit (no flips).  Draws from the global torch RNG, so a run is
    reproducible from its saved RNG state.
    """

    def __init__(self, degrees: float = 8.0, translate: float = 0.0625, scale: tuple[float, float] = (0.95, 1.05)):
        self.degrees, self.translate, self.scale = degrees, translate, scale

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        angle = (torch.rand(n) * 2 - 1) * (self.degrees * np.pi / 180)
        s = torch.empty(n).uniform_(*self.scale)
        shift = (torch.rand(n, 2) * 2 - 1) * (2 * self.translate)  # grid coordinates span 2
        cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = torch.nn.functional.affine_grid(theta.to(x), list(x.shape), align_corners=False)
        return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def __repr__(self) -> str:
        return f"RandomAffineBatch(degrees={self.degrees}, translate={self.translate}, scale={self.scale})"


# --------------------------------------------------------------------------- image folders

def _timm_train_transform(recipe: Recipe, img_size: int, mean, std) -> Callable:
    from timm.data import create_transform

    return create_transform(
        img_size, is_training=True, auto_augment=recipe.auto_augment, color_jitter=recipe.color_jitter,
        hflip=recipe.hflip, re_prob=recipe.re_prob, re_mode=recipe.re_mode, interpolation=recipe.interpolation,
        mean=tuple(mean), std=tuple(std),
    )


#: the digits' own evaluation transform: the 8x8 images are upscaled bilinearly to img_size, nothing cropped
DIGITS_EVAL_TRANSFORM = {"crop_pct": 1.0, "interpolation": "bilinear"}
#: timm's evaluation crop (``timm.data.DEFAULT_CROP_PCT``) for image folders
FOLDER_CROP_PCT = 0.875


def _folder_val_transform(img_size: int, mean, std, interpolation: str = "bicubic",
                          crop_pct: float = FOLDER_CROP_PCT) -> Callable:
    from timm.data import create_transform

    return create_transform(img_size, is_training=False, interpolation=interpolation, crop_pct=crop_pct,
                            mean=tuple(mean), std=tuple(std))


def _class_dirs(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _check_root(root: Path, splits: Sequence[str]) -> dict[str, Path]:
    hint = "expected 'digits' or an ImageFolder root laid out as ROOT/train/<class>/*.jpg and ROOT/val/<class>/*.jpg"
    if not root.exists():
        raise UsageError(f"--data {root}: no such directory ({hint})")
    if not root.is_dir():
        raise UsageError(f"--data {root}: is a file, not a directory ({hint})")
    out = {}
    for split in splits:
        d = root / split
        if not d.is_dir():
            raise UsageError(f"--data {root}: has no {split}/ subfolder ({hint})")
        classes = _class_dirs(d)
        if not classes:
            raise UsageError(f"--data {root}: {d} has no class subfolders ({hint})")
        empty = [c.name for c in classes
                 if not any(f.is_file() and f.suffix.lower() in IMG_EXTENSIONS for f in c.rglob("*"))]
        if empty:
            raise UsageError(f"--data {root}: class folder(s) {empty[:5]} in {d} hold no images "
                             f"({', '.join(IMG_EXTENSIONS)})")
        out[split] = d
    return out


def _image_folder(path: Path, transform: Callable):
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(path), transform=transform)
    except (FileNotFoundError, OSError) as exc:
        raise UsageError(f"--data: cannot read image folder {path}: {exc}") from None


# --------------------------------------------------------------------------- entry points

def build_data(spec: str, img_size: int, mean, std, recipe: Recipe) -> DataBundle:
    """Training and validation datasets for ``--data spec``."""
    if is_digits(spec):
        batch_tf = None
        if recipe.augment == "timm":  # timm's PIL transforms, image by image
            train = DigitsDataset("train", img_size, transform=_timm_train_transform(recipe, img_size, mean, std),
                                  pil=True)
        else:
            train = DigitsDataset("train", img_size, mean, std)
            if recipe.augment == "light":
                batch_tf = RandomAffineBatch()
        val = DigitsDataset("val", img_size, mean, std)
        return DataBundle("digits", "digits", DIGITS_LABELS, train, val, batch_tf, dict(DIGITS_EVAL_TRANSFORM))
    root = Path(spec).expanduser()
    dirs = _check_root(root, ("train", "val"))
    if recipe.augment == "timm":
        tf = _timm_train_transform(recipe, img_size, mean, std)
    elif recipe.augment == "light":
        from timm.data import create_transform

        tf = create_transform(img_size, is_training=True, interpolation=recipe.interpolation,
                              mean=tuple(mean), std=tuple(std))
    else:
        tf = _folder_val_transform(img_size, mean, std, recipe.interpolation)
    train = _image_folder(dirs["train"], tf)
    val = _image_folder(dirs["val"], _folder_val_transform(img_size, mean, std, recipe.interpolation))
    if train.classes != val.classes:
        only_t = sorted(set(train.classes) - set(val.classes))
        only_v = sorted(set(val.classes) - set(train.classes))
        raise UsageError(f"--data {root}: train/ and val/ have different classes "
                         f"(only in train: {only_t[:5]}, only in val: {only_v[:5]})")
    return DataBundle("folder", str(root), tuple(train.classes), train, val,
                      eval_transform={"crop_pct": FOLDER_CROP_PCT, "interpolation": recipe.interpolation})


def build_val_data(spec: str, img_size: int, mean, std, labels: Optional[Sequence[str]] = None, *,
                   crop_pct: float = FOLDER_CROP_PCT, interpolation: str = "bicubic") -> DataBundle:
    """The validation split only (for ``hydravit-edge eval``), through the model's evaluation transform.

    Image folders go through ``crop_pct`` / ``interpolation`` (the model config's); the digits
    have their own fixed upscaling.
    """
    if is_digits(spec):
        val = DigitsDataset("val", img_size, mean, std)
        bundle = DataBundle("digits", "digits", DIGITS_LABELS, None, val, eval_transform=dict(DIGITS_EVAL_TRANSFORM))
    else:
        root = Path(spec).expanduser()
        dirs = _check_root(root, ("val",))
        val = _image_folder(dirs["val"], _folder_val_transform(img_size, mean, std, interpolation, crop_pct))
        bundle = DataBundle("folder", str(root), tuple(val.classes), None, val,
                            eval_transform={"crop_pct": crop_pct, "interpolation": interpolation})
    if labels is not None and tuple(labels) != bundle.labels:
        if len(labels) != len(bundle.labels):
            raise UsageError(f"the checkpoint has {len(labels)} classes but --data {spec} has {len(bundle.labels)}")
        raise UsageError(f"the checkpoint's class labels {list(labels)[:5]}... differ from --data {spec}'s "
                         f"{list(bundle.labels)[:5]}...")
    return bundle
