"""Balanced fine-tuning of a timm classifier on a group-labelled set plus DDB counterfactuals.

`spurbench finetune --model NAME --data DIR [--counterfactuals DIR] --out DIR` trains on the `train`
split of --data together with the kept counterfactuals (the `train` split of a `method: ddb` swap
build), with DDB's loss

    L = CE(original rows) + gamma1 * CE(counterfactuals of the first minority group)
                          + gamma2 * CE(counterfactuals of the second minority group)

(each CE a mean over its rows in the batch; a term with no rows in the batch is 0; counterfactuals of
other groups count as original rows). The minority groups are `--minority-groups G1 G2`, by default the
two counterfactual groups rarest in the training split, the commoner of the two first (so the rarest
gets gamma2, the larger weight). The gamma mapping against DDB's: DDB's train.py weighs counterfactuals by
their generated label -- those labelled 0 (landbird, painted into water photos: group landbird/water) get
gamma1, those labelled 1 (waterbird on land: waterbird/land) gamma2. On Waterbirds the rarity rule gives the
same assignment (waterbird/land, 56 training images, is rarer than landbird/water, 184); on other sets name the
groups with `--minority-groups` to follow a label order instead. Defaults are DDB's: gamma1 6, gamma2 10, Adam
lr 5e-6, 200 epochs, batch 32, the classifier head re-initialised (`--head reinit`: xavier-uniform weights, zero
bias, as DDB's weight_init; `--head keep` fine-tunes the given head) and training images augmented as DDB's
Waterbirds loader does (`--augment ddb`: RandomResizedCrop to the input size, scale 0.7-1, ratio 3/4-4/3,
bilinear, and a horizontal flip; `--augment none`: the timm eval transform). Validation always uses the eval
transform. The starting model (epoch 0, scored before any head is re-initialised) and every epoch after it are
scored on the `val` split, and the best worst-group accuracy among them is kept: a fine-tune never ends worse
on validation than the model it started from.

Writes to --out: `model.safetensors` (the chosen epoch's state dict, timm key names: score it with
`spurbench eval --model NAME --weights <out>/model.safetensors`), `train_log.jsonl` (one line per
epoch: losses, validation per-group / worst-group / pooled accuracy; epoch 0 is the starting model), `finetune.json` (settings,
label set, chosen epoch) and `checkpoint.pt` (resume state). Interrupted runs resume from the last
finished epoch with the same command and reach the same weights as an uninterrupted run.

Everything random (shuffling, augmentation, dropout, a new head) comes from --seed and the epoch, so runs
repeat exactly. A dataset whose label set is not ImageNet-1k (e.g. Waterbirds) gets a new head of its size,
initialised from --seed, unless --weights already has one. Runs on several devices with
`accelerate launch -m spurbench finetune ...` (each process takes its share of every epoch's batches).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spurbench import untrusted
from spurbench.errors import SpurbenchError, first_line
from spurbench.files import WrittenFolder, atomic_path

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.safetensors"
LOG = "train_log.jsonl"
SUMMARY = "finetune.json"
#: loss terms: 0 original rows, 1 and 2 the counterfactuals of the first and second minority group
TERM_NAMES = ("original", "minority1", "minority2")
HEADS = ("reinit", "keep")
AUGMENTS = ("ddb", "none")


@dataclass
class FinetuneConfig:
    """DDB's defaults; every field has a flag."""

    epochs: int = 200
    lr: float = 5e-6
    batch_size: int = 32
    gamma1: float = 6.0
    gamma2: float = 10.0
    seed: int = 0
    minority_groups: list[str] | None = None
    group_column: str = "group"
    train_split: str = "train"
    val_split: str = "val"
    counterfactual_split: str = "train"
    #: reinit: DDB's xavier-uniform head (zero bias) before training; keep: train the given head
    head: str = "reinit"
    #: ddb: RandomResizedCrop(scale 0.7-1) + horizontal flip on training images; none: the eval transform
    augment: str = "ddb"

    def validate(self) -> None:
        for name, allowed in (("head", HEADS), ("augment", AUGMENTS)):
            if getattr(self, name) not in allowed:
                raise SpurbenchError(f"--{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise SpurbenchError(
                    f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}"
                )
        if not self.lr > 0:
            raise SpurbenchError(f"--lr must be positive, got {self.lr}")
        for name in ("gamma1", "gamma2"):
            if getattr(self, name) < 0:
                raise SpurbenchError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if self.minority_groups is not None and (len(self.minority_groups) != 2 or len(set(self.minority_groups)) != 2):
            raise SpurbenchError(f"--minority-groups takes two different group names, got {self.minority_groups}")


# ---------------------------------------------------------------------------------------------
# data


@dataclass
class GroupSplit:
    """One split: undecoded images, labels and group names."""

    rows: Any  # datasets.Dataset with `image` undecoded
    labels: np.ndarray
    groups: list[str]
    label_names: list[str]
    where: str


def open_group_split(folder: str | Path | Any, split: str, group_column: str) -> GroupSplit:
    """`folder`: a dataset folder, or one opened already (`spurbench.dataset.open_dataset_folder`: the card and splits
    read once for every split taken from it)."""
    from datasets import Image

    from spurbench import dataset as ds_contract

    opened = ds_contract.open_dataset_folder(folder)
    folder = opened.folder
    ds = opened.split(split)
    where = f"'{folder}' split '{split}'"
    if group_column not in ds.column_names:
        raise SpurbenchError(
            f"dataset {where} has no `{group_column}` column; fine-tuning needs group labels "
            "(e.g. `spurbench import waterbirds`, or a `method: ddb` swap build), or name the column with --group-column"
        )
    names = ds_contract.label_names_of(ds.features, where, "its label set is unknown")
    if len(ds) == 0:
        raise SpurbenchError(f"dataset {where} has no rows")
    return GroupSplit(
        rows=ds.select_columns(["image"]).cast_column("image", Image(decode=False)),
        labels=np.asarray(ds["label"], dtype=np.int64),
        groups=[str(g) for g in ds[group_column]],
        label_names=names,
        where=where,
    )


class _Images(torch.utils.data.Dataset):
    """(image tensor, label, loss term) for rows of several splits; decoding happens in the workers."""

    def __init__(self, parts: Sequence[tuple[GroupSplit, np.ndarray]], transform):
        self.index = [(p, i, int(term[i])) for p, term in parts for i in range(len(p.labels))]
        self.transform = transform
        for p, i, _ in self.index:  # every header checked before training starts (none decoded): one line, by row
            untrusted.image_size(_image_source(p, i), _what(p, i))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int):
        part, i, term = self.index[k]
        with untrusted.open_image(_image_source(part, i), _what(part, i)) as im:
            x = self.transform(im.convert("RGB"))
        return x, int(part.labels[i]), term


def _image_source(part: GroupSplit, i: int) -> bytes | str:
    item = part.rows[i]["image"] or {}
    if item.get("bytes"):
        return item["bytes"]
    if not item.get("path"):
        raise SpurbenchError(f"{_what(part, i)} has no image (null); remove the row or rebuild the dataset")
    return item["path"]


def _what(part: GroupSplit, i: int) -> str:
    return f"{part.where} row {i}'s image"


def default_minority_groups(train_groups: Sequence[str], cf_groups: Sequence[str] | None = None) -> list[str | None]:
    """The two rarest groups in training (ties by name), the commoner of the two first.

    With counterfactuals, the candidates are the counterfactuals' groups (a group the training split
    lacks counts 0; when they all share one group, the second is None); without, the training split's groups."""
    counts = Counter(train_groups)
    candidates = sorted(set(cf_groups)) if cf_groups else sorted(counts)
    if cf_groups and len(candidates) == 1:  # every kept counterfactual is in one group: gamma2 weighs nothing
        return [candidates[0], None]
    if len(candidates) < 2:
        raise SpurbenchError(
            f"found {len(candidates)} candidate minority group(s) ({', '.join(candidates)}); balanced fine-tuning weighs two, "
            "name them with --minority-groups"
        )
    rarest = sorted((counts.get(g, 0), g) for g in candidates)[:2]
    return [rarest[1][1], rarest[0][1]]


def loss_terms(cf_groups: Sequence[str], minority: Sequence[str]) -> np.ndarray:
    """Loss term of each counterfactual row: 1 (gamma1), 2 (gamma2) or 0 (counted with the originals)."""
    return np.asarray([1 if g == minority[0] else 2 if g == minority[1] else 0 for g in cf_groups], dtype=np.int64)


def balanced_loss(
    logits: torch.Tensor, labels: torch.Tensor, terms: torch.Tensor, gamma1: float, gamma2: float
) -> tuple[torch.Tensor, dict]:
    """CE(term 0) + gamma1 * CE(term 1) + gamma2 * CE(term 2); each CE the mean over its rows, 0 when it has none."""
    total = logits.new_zeros(())
    parts = {}
    for term, weight in ((0, 1.0), (1, gamma1), (2, gamma2)):
        sel = terms == term
        if bool(sel.any()):
            ce = torch.nn.functional.cross_entropy(logits[sel].float(), labels[sel])
            total = total + weight * ce
            parts[term] = float(ce.detach())
    return total, parts


def group_accuracies(pred: np.ndarray, labels: np.ndarray, groups: Sequence[str]) -> dict[str, float]:
    """Accuracy of each group, by group name."""
    groups = np.asarray(groups)
    return {g: float(np.mean(pred[groups == g] == labels[groups == g])) for g in sorted(set(groups.tolist()))}


# ---------------------------------------------------------------------------------------------
# model


def load_trainable(spec, num_classes: int, seed: int):
    """The classifier of `spec` with a `num_classes` head, in train mode with gradients on.

    A checkpoint whose head has another size (an ImageNet-1k model for a two-class set) gets a new
    head, initialised from `seed`."""
    from spurbench.classifiers import HeadMismatch, create_classifier
    from spurbench.imagenet import NUM_CLASSES

    new_head = False
    try:
        clf = create_classifier(spec, num_classes=num_classes)
    except HeadMismatch:
        if num_classes == NUM_CLASSES:
            raise
        clf = create_classifier(spec)
        torch.manual_seed(seed)
        clf.model.reset_classifier(num_classes)
        new_head = True
    clf.model.requires_grad_(True)
    return clf, new_head


def reinit_head(model: torch.nn.Module, seed: int) -> None:
    """DDB's head re-initialisation: xavier-uniform weights and zero bias of the classifier layer, from `seed`."""
    head = model.get_classifier()
    layers = [m for m in head.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    if not layers:
        raise SpurbenchError(f"{type(model).__name__} has no linear classifier layer to re-initialise; use --head keep")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in layers:
            # drawn on the CPU and copied: the same weights whichever device the model is on (a CPU generator
            # cannot fill a CUDA tensor)
            weight = torch.empty(layer.weight.shape, dtype=layer.weight.dtype)
            torch.nn.init.xavier_uniform_(weight, generator=generator)
            layer.weight.copy_(weight)
            if layer.bias is not None:
                layer.bias.zero_()


def train_transform(data_config: dict, augment: str):
    """The training images' transform: the timm eval transform (`none`) or DDB's augmentation (`ddb`)."""
    from timm.data import create_transform

    if augment == "none":
        return create_transform(**data_config)
    from torchvision import transforms

    size = tuple(data_config["input_size"][-2:])
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(
                size, scale=(0.7, 1.0), ratio=(0.75, 4 / 3), interpolation=transforms.InterpolationMode.BILINEAR
            ),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(data_config["mean"], data_config["std"]),
        ]
    )


@torch.no_grad()
def predict_labels(model: torch.nn.Module, loader, device) -> np.ndarray:
    model.eval()
    out = []
    for x, _, _ in loader:
        out.append(model(x.to(device)).argmax(dim=-1).cpu())
    return torch.cat(out).numpy()


def _validation_row(epoch: int, model, loader, val: GroupSplit, device) -> dict:
    pred = predict_labels(model, loader, device)
    accs = group_accuracies(pred, val.labels, val.groups)
    return {
        "epoch": epoch,
        "val_worst_group_accuracy": min(accs.values()),
        "val_pooled_accuracy": float(np.mean(pred == val.labels)),
        "val_group_accuracy": accs,
    }


# ---------------------------------------------------------------------------------------------
# the run


@dataclass
class RunInputs:
    spec: Any  # ClassifierSpec
    data: str
    counterfactuals: str | None
    out: str
    workers: int = 0
    command: str = ""
    extra: dict = field(default_factory=dict)


def _check_out_is_no_input(inputs: RunInputs) -> None:
    """One line when --out is, holds or lies inside one of the run's inputs (--weights, --data, --counterfactuals): a
    run never writes over what it reads. (--out is then claimed: a new or empty folder, or one an earlier fine-tune
    wrote, `files.WrittenFolder`.)"""
    out = Path(inputs.out)
    weights = (inputs.spec.to_dict().get("weights") or {}).get("file")
    named = [("--weights", weights), ("--data", inputs.data), ("--counterfactuals", inputs.counterfactuals)]
    where = out.expanduser().resolve()
    for flag, value in named:
        if not value or not Path(value).expanduser().exists():
            continue
        source = Path(value).expanduser().resolve()
        if where == source or where in source.parents or source in where.parents:
            raise SpurbenchError(
                f"--out '{out}' {'is' if where == source else 'holds' if where in source.parents else 'lies inside'} "
                f"{flag} '{value}', which the run reads; give another --out (nothing was written)"
            )
    WrittenFolder.claim(out, "--out", create=False)  # a file, '~', a user's folder: refused before anything is read


def _save(written: WrittenFolder, relative: str, save) -> None:
    """Write one output through `save(path)` (a library's own writer) atomically and record it; refused when it
    would replace a file spurbench did not write."""
    written.check_replaceable(relative)
    with atomic_path(written.path(relative)) as tmp:
        save(tmp)
    written.adopt(relative)


def _run_identity(cfg: FinetuneConfig, inputs: RunInputs, minority: list[str]) -> dict:
    """What a resumed run must share with the run it continues."""
    return {
        "config": {**asdict(cfg), "epochs": None, "minority_groups": minority},  # more epochs may be asked for later
        "model": inputs.spec.to_dict(),
        "data": str(Path(inputs.data).resolve()),
        "counterfactuals": str(Path(inputs.counterfactuals).resolve()) if inputs.counterfactuals else None,
    }


@dataclass
class _Data:
    """The run's splits: training (with the counterfactuals, each row's loss term), validation, the minority groups."""

    train: GroupSplit
    val: GroupSplit
    parts: list[tuple[GroupSplit, np.ndarray]]
    minority: list[str | None]
    num_cf: dict[str, int]


def _open_data(cfg: FinetuneConfig, inputs: RunInputs) -> _Data:
    """Read the training and validation splits and the counterfactuals, and pick the minority groups."""
    from spurbench import dataset as ds_contract

    data = ds_contract.open_dataset_folder(inputs.data)  # opened once: a split named twice is read once
    train = open_group_split(data, cfg.train_split, cfg.group_column)
    val = open_group_split(data, cfg.val_split, cfg.group_column)
    parts = [(train, np.zeros(len(train.labels), dtype=np.int64))]
    if val.label_names != train.label_names:
        raise SpurbenchError(f"{val.where} and {train.where} have different label sets")
    cf = None
    if inputs.counterfactuals:
        same = Path(inputs.counterfactuals).expanduser().resolve() == data.folder.expanduser().resolve()
        cf = open_group_split(data if same else inputs.counterfactuals, cfg.counterfactual_split, cfg.group_column)
    if cf is not None and cf.label_names != train.label_names:
        raise SpurbenchError(
            f"counterfactuals {cf.where} label {len(cf.label_names)} classes, {train.where} {len(train.label_names)}; "
            "they must share one label set (build the counterfactuals from the same data)"
        )
    minority = (
        list(cfg.minority_groups)
        if cfg.minority_groups
        else default_minority_groups(train.groups, cf.groups if cf else None)
    )
    known = set(train.groups) | set(cf.groups if cf else [])
    missing = [g for g in minority if g is not None and g not in known]
    if missing:
        raise SpurbenchError(
            f"minority group(s) {', '.join(missing)} are not groups of the training data; its groups: {', '.join(sorted(known))}"
        )
    num_cf = {}
    if cf is not None:
        terms = loss_terms(cf.groups, minority)
        parts.append((cf, terms))
        num_cf = {name: int((terms == t).sum()) for name, t in (("gamma1", 1), ("gamma2", 2), ("other", 0))}
    return _Data(train, val, parts, minority, num_cf)


def _resume(written: WrittenFolder, identity: dict, restart: bool, model, optimizer) -> tuple[int, dict, list]:
    """(epochs done, best so far, log) from --out's checkpoint, loaded into `model` and `optimizer`; a fresh start
    without one or with --restart. A checkpoint spurbench did not write (or that changed since) is refused unread."""
    out = written.folder
    start, best, log = 0, {"epoch": None, "worst_group_accuracy": -1.0}, []
    if restart:
        written.check_replaceable(CHECKPOINT, WEIGHTS, LOG, SUMMARY)  # all replaced by this run
        return start, best, log
    if not written.path(CHECKPOINT).exists():
        return start, best, log
    written.check_replaceable(CHECKPOINT)
    try:
        state = torch.load(written.path(CHECKPOINT), map_location="cpu", weights_only=True)
        same = json.loads(state["identity"]) == json.loads(json.dumps(identity))
    except Exception as err:  # a damaged checkpoint of ours: torch raises many kinds
        raise SpurbenchError(
            f"'{out / CHECKPOINT}' cannot be read ({first_line(err)}); use --restart to discard it or another --out"
        ) from None
    if not same:
        raise SpurbenchError(
            f"'{out}' holds a fine-tune with other settings, model or data; use another --out, or --restart to discard it"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["epoch"]), json.loads(state["best"]), json.loads(state["log"])


def _cpu_state(accelerator, model) -> dict:
    return {k: v.detach().cpu().contiguous() for k, v in accelerator.unwrap_model(model).state_dict().items()}


def _save_weights(written: WrittenFolder, state_dict: dict) -> None:
    from safetensors.torch import save_file

    _save(written, WEIGHTS, lambda p: save_file(state_dict, str(p), metadata={"format": "pt"}))


def _summary(cfg: FinetuneConfig, inputs: RunInputs, d: _Data, new_head: bool, best: dict, log: list) -> dict:
    """What finetune.json records: the chosen epoch and its accuracy, the starting model's, and how it was run."""
    names = d.train.label_names
    return {
        "model": inputs.spec.model,
        "weights_in": inputs.spec.to_dict().get("weights"),
        "new_head": new_head,
        "label_names": names if len(names) <= 50 else f"{len(names)} classes",
        "epochs_done": len(log) - 1,
        "chosen_epoch": best["epoch"],
        "chosen_by": f"worst-group accuracy on split '{cfg.val_split}'",
        "val_worst_group_accuracy": best["worst_group_accuracy"] if best["epoch"] is not None else None,
        "chosen_is_the_starting_model": best["epoch"] == 0,
        "head": cfg.head,
        "augment": cfg.augment,
        "val_pooled_accuracy": best.get("pooled_accuracy"),
        "before": {k: log[0][k] for k in ("val_worst_group_accuracy", "val_pooled_accuracy", "val_group_accuracy")},
        "minority_groups": {"gamma1": d.minority[0], "gamma2": d.minority[1]},
        "num_counterfactuals": d.num_cf,
        "config": asdict(cfg),
        "data": str(inputs.data),
        "counterfactuals": inputs.counterfactuals,
        "weights": WEIGHTS,
        "command": inputs.command,
    }


def _best(epoch: int, row: dict) -> dict:
    return {
        "epoch": epoch,
        "worst_group_accuracy": row["val_worst_group_accuracy"],
        "pooled_accuracy": row["val_pooled_accuracy"],
    }


class _Run:
    """One fine-tune's model, optimizer, loaders and state (epochs done, best epoch, log), on the accelerator."""

    def __init__(self, cfg: FinetuneConfig, inputs: RunInputs, d: _Data, written: WrittenFolder, restart: bool):
        """Load the model and the images, and resume from --out's checkpoint."""
        from accelerate import Accelerator
        from timm.data import create_transform

        self.cfg, self.inputs, self.d, self.written = cfg, inputs, d, written
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        clf, self.new_head = load_trainable(inputs.spec, len(d.train.label_names), cfg.seed)
        model = clf.model
        self.train_set = _Images(d.parts, train_transform(clf.data_config, cfg.augment))
        val_set = _Images([(d.val, np.zeros(len(d.val.labels), dtype=np.int64))], create_transform(**clf.data_config))
        self.val_loader = torch.utils.data.DataLoader(val_set, batch_size=cfg.batch_size, num_workers=inputs.workers)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        self.identity = _run_identity(cfg, inputs, d.minority)
        self.start, self.best, self.log = _resume(written, self.identity, restart, model, optimizer)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.device = self.accelerator.device
        self.main = self.accelerator.is_main_process

    def validate(self, epoch: int) -> dict:
        return _validation_row(epoch, self.model, self.val_loader, self.d.val, self.device)

    def score_start(self) -> None:
        """Epoch 0: the starting model on the validation split, the "before" of the run and a candidate."""
        self.log.append(self.validate(0))
        self.best = _best(0, self.log[0])
        if self.main:
            _save_weights(self.written, _cpu_state(self.accelerator, self.model))
        if self.cfg.head == "reinit":  # after scoring the model as given; the same on every process (seeded)
            reinit_head(self.accelerator.unwrap_model(self.model), self.cfg.seed)

    def train(self, progress: bool, stop_after_epochs: int | None) -> None:
        """Epoch by epoch up to --epochs, keeping the best weights and a checkpoint after each epoch."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        done_now = 0
        epochs = tqdm(
            range(self.start, cfg.epochs),
            initial=self.start,
            total=cfg.epochs,
            desc="finetune",
            unit="epoch",
            disable=not progress or not self.main,
        )
        for epoch in epochs:
            if stop_after_epochs is not None and done_now >= stop_after_epochs:
                break
            losses = self.train_epoch(epoch, progress)
            row = {**self.validate(epoch + 1), **losses}
            self.log.append(row)
            self.save_epoch(epoch + 1, row)
            self.accelerator.wait_for_everyone()
            epochs.set_postfix(
                loss=f"{row['loss']:.3f}", val_wga=f"{row['val_worst_group_accuracy']:.3f}", best=self.best["epoch"]
            )
            done_now += 1
        epochs.close()

    def train_epoch(self, epoch: int, progress: bool) -> dict:
        """One epoch over this process's share of the training rows; the mean loss and per-term cross-entropies."""
        from tqdm.auto import tqdm

        cfg, accelerator = self.cfg, self.accelerator
        rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
        # everything random in an epoch comes from (seed, epoch): a resumed run repeats it exactly
        seed = cfg.seed * 100_003 + epoch
        torch.manual_seed(seed)
        order = torch.randperm(len(self.train_set), generator=torch.Generator().manual_seed(seed)).tolist()
        per_rank = len(order) // world
        mine = order[rank * per_rank : (rank + 1) * per_rank] if world > 1 else order
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(self.train_set, mine),
            batch_size=cfg.batch_size,
            shuffle=False,
            num_workers=self.inputs.workers,
        )
        self.model.train()
        sums, batches = {"loss": 0.0}, 0
        for x, y, term in tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, disable=not progress or not self.main):
            x, y, term = x.to(device), y.to(device), term.to(device)
            self.optimizer.zero_grad(set_to_none=True)
            loss, parts_ce = balanced_loss(self.model(x), y, term, cfg.gamma1, cfg.gamma2)
            accelerator.backward(loss)
            self.optimizer.step()
            sums["loss"] += float(loss.detach())
            for term, ce in parts_ce.items():
                key = f"ce_{TERM_NAMES[term]}"
                sums[key] = sums.get(key, 0.0) + ce
            batches += 1
        return {k: v / max(batches, 1) for k, v in sums.items()}

    def save_epoch(self, epoch: int, row: dict) -> None:
        """The weights when `row` beats the best so far; the checkpoint and the log (on the main process)."""
        state_dict = _cpu_state(self.accelerator, self.model)
        if row["val_worst_group_accuracy"] > self.best["worst_group_accuracy"]:
            self.best = _best(epoch, row)
            if self.main:
                _save_weights(self.written, state_dict)
        if self.main:
            ckpt = {
                "model": state_dict,
                "optimizer": self.optimizer.state_dict(),
                "epoch": epoch,
                "best": json.dumps(self.best),
                "log": json.dumps(self.log),
                "identity": json.dumps(self.identity),
            }
            _save(self.written, CHECKPOINT, lambda p: torch.save(ckpt, p))
            self.written.write(LOG, "".join(json.dumps(r) + "\n" for r in self.log))


def finetune(
    cfg: FinetuneConfig,
    inputs: RunInputs,
    restart: bool = False,
    progress: bool = True,
    stop_after_epochs: int | None = None,
) -> dict:
    """Run (or resume) a balanced fine-tune; returns the summary written to finetune.json.

    The steps: claim --out (never one of the inputs); read the splits and pick the minority groups; load the model
    and resume from --out's checkpoint; score the starting model (epoch 0, a candidate); train epoch by epoch, keeping
    the weights of the best worst-group validation accuracy and a checkpoint after each epoch; write the summary.
    `stop_after_epochs` ends this call after that many epochs of this invocation, as an interruption
    would (for tests of resuming)."""
    cfg.validate()
    _check_out_is_no_input(inputs)
    d = _open_data(cfg, inputs)
    written = WrittenFolder.claim(inputs.out, "--out")
    run = _Run(cfg, inputs, d, written, restart)
    if not run.log:
        run.score_start()
    run.train(progress, stop_after_epochs)
    summary = {**_summary(cfg, inputs, d, run.new_head, run.best, run.log), "device": str(run.device)}  # where it ran
    if run.main:
        written.write(SUMMARY, json.dumps(summary, indent=2) + "\n")
    return summary


# ---------------------------------------------------------------------------------------------
# command line


def _setting(group, flag: str, help: str, **kwargs) -> None:
    """A flag of a `FinetuneConfig` setting: "not given" by default, so that --config's value applies unless the flag
    overrides it; its help ends with DDB's default."""
    default = getattr(FinetuneConfig(), flag[2:].replace("-", "_"))
    group.add_argument(flag, default=argparse.SUPPRESS, help=f"{help} (default: {default})", **kwargs)


def _classifier_arguments(parser: argparse.ArgumentParser) -> None:
    m = parser.add_argument_group("classifier")
    m.add_argument(
        "--model",
        required=True,
        metavar="NAME",
        help="timm model name (e.g. resnet50.a1_in1k), or the name of an entry of --panel",
    )
    m.add_argument(
        "--weights",
        default=None,
        metavar="FILE",
        help="local state dict to start from (.safetensors or torch file); unset: timm's pretrained weights",
    )
    m.add_argument(
        "--key-map",
        default="none",
        metavar="MAP",
        help="how --weights' tensor names map onto the timm model: none, positional, strip_prefix:<prefix>",
    )
    m.add_argument(
        "--panel",
        default=None,
        metavar="NAME|FILE",
        help="take --model's weights from this panel's entry of that name (e.g. --panel offline --model tf_efficientnet_lite0)",
    )


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    d = parser.add_argument_group("data")
    d.add_argument(
        "--data",
        required=True,
        metavar="DIR",
        help="group-labelled dataset with train and val splits (e.g. from `spurbench import waterbirds`)",
    )
    d.add_argument(
        "--counterfactuals",
        default=None,
        metavar="DIR",
        help="kept counterfactuals: a `method: ddb` swap build (its train split), same label set as --data",
    )
    d.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="folder for model.safetensors, train_log.jsonl, finetune.json and the resume checkpoint",
    )
    _setting(d, "--group-column", "column naming each row's group")
    _setting(d, "--train-split", "split of --data to train on")
    _setting(d, "--val-split", "split of --data whose worst-group accuracy picks the epoch")
    _setting(d, "--counterfactual-split", "split of --counterfactuals holding the kept rows")


def _training_arguments(parser: argparse.ArgumentParser) -> None:
    t = parser.add_argument_group("training (DDB's defaults; a --config file, then flags, override them)")
    t.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="YAML mapping of these settings by their names (epochs, lr, batch_size, gamma1, gamma2, minority_groups, seed, ...)",
    )
    _setting(t, "--epochs", "epochs in all; a resumed run continues up to this", type=int)
    _setting(t, "--lr", "Adam learning rate", type=float)
    _setting(t, "--batch-size", "images per batch, per device", type=int)
    for n, which in ((1, "first"), (2, "second")):
        _setting(t, f"--gamma{n}", f"weight of the CE of the {which} minority group's counterfactuals", type=float)
    t.add_argument(
        "--minority-groups",
        nargs=2,
        default=argparse.SUPPRESS,
        metavar=("G1", "G2"),
        help="the groups gamma1 and gamma2 weigh (default: the two counterfactual groups rarest in training, the commoner first)",
    )
    _setting(t, "--seed", "seed of the shuffling, augmentation, dropout and a new head", type=int)
    _setting(
        t,
        "--head",
        "reinit: DDB's xavier-uniform head (zero bias) before training; keep: fine-tune the given head",
        choices=HEADS,
    )
    _setting(
        t,
        "--augment",
        "ddb: RandomResizedCrop (scale 0.7-1, ratio 3/4-4/3) + horizontal flip on training images, as DDB; "
        "none: the classifier's eval transform",
        choices=AUGMENTS,
    )
    t.add_argument("--workers", type=int, default=0, help="DataLoader worker processes decoding images")
    t.add_argument("--restart", action="store_true", help="discard a run already in --out instead of resuming it")
    t.add_argument("--no-progress", action="store_true", help="no progress bars (logs)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _classifier_arguments(parser)
    _data_arguments(parser)
    _training_arguments(parser)


def config_from(args: argparse.Namespace) -> FinetuneConfig:
    """DDB's defaults, then the --config file's values, then the flags given."""
    import yaml

    fields = [f for f in FinetuneConfig.__dataclass_fields__]
    values: dict = {}
    if args.config:
        path = Path(args.config).expanduser()
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise SpurbenchError(
                f"cannot read --config '{path}' ({err.__class__.__name__}); give a YAML file of finetune settings"
            ) from None
        if not isinstance(data, dict):
            raise SpurbenchError(f"--config '{path}' must be a YAML mapping of settings, e.g. `epochs: 200`")
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise SpurbenchError(
                f"--config '{path}' has unknown setting(s) {', '.join(map(str, unknown))}; known: {', '.join(fields)}"
            )
        values.update(data)
    values.update({f: getattr(args, f) for f in fields if hasattr(args, f)})
    return FinetuneConfig(**values)


def _spec(args: argparse.Namespace):
    from spurbench.classifiers import ClassifierSpec, load_panel

    if args.panel:
        if args.weights:
            raise SpurbenchError("give either --panel (its entry's weights) or --weights, not both")
        specs = load_panel(args.panel)
        found = [s for s in specs if s.display_name == args.model]
        if not found:
            raise SpurbenchError(
                f"panel '{args.panel}' has no entry named '{args.model}'; its entries: {', '.join(s.display_name for s in specs)}"
            )
        return found[0]
    if args.key_map != "none" and args.weights is None:
        raise SpurbenchError("--key-map applies to --weights; add --weights FILE")
    weights = {"file": args.weights, "key_map": args.key_map} if args.weights else None
    return ClassifierSpec(model=args.model, weights=weights)


def run(args: argparse.Namespace) -> int:
    import shlex

    if not sys.stderr.isatty():  # logged runs: stderr holds what matters, not `datasets`' bars
        import datasets

        datasets.disable_progress_bars()

    cfg = config_from(args)
    inputs = RunInputs(
        spec=_spec(args),
        data=args.data,
        counterfactuals=args.counterfactuals,
        out=args.out,
        workers=args.workers,
        command="spurbench finetune " + shlex.join(sys.argv[2:] if len(sys.argv) > 2 else []),
    )
    summary = finetune(cfg, inputs, restart=args.restart, progress=not args.no_progress)
    from accelerate import PartialState

    if not PartialState().is_main_process:  # under `accelerate launch`, one report
        return 0
    print(
        f"chose epoch {summary['chosen_epoch']} of {summary['epochs_done']}: validation worst-group accuracy "
        f"{summary['before']['val_worst_group_accuracy']:.4f} before, {summary['val_worst_group_accuracy']:.4f} after "
        f"(pooled {summary['before']['val_pooled_accuracy']:.4f} -> {summary['val_pooled_accuracy']:.4f}); weights: {Path(args.out) / WEIGHTS}"
    )
    return 0
