"""Fine-tuning several members at once, as the paper does: transfer learning, then the later
blocks unfrozen; class-balanced sampling, augmentation, early stopping on validation.

All members see the same augmented batches (one trunk pass per batch for members that share
a frozen trunk), but each weighs the samples of every batch by its own Poisson(1) draws
(online bagging, Oza 2005) and starts from its own weights, so the members still differ.
Each member keeps the weights of its epoch with the lowest validation loss and stops after
`patience` epochs without improvement. Deterministic for a seed on a given device.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from chromowatch.settings import TrainingSettings
from chromowatch.training.augment import Augment, augment, augment_of
from chromowatch.training.dataset import LabelledCrop, balanced_indices, to_batch
from chromowatch.training.nets import (
    Net,
    autocast,
    forward_groups,
    head_blocks,
    later_blocks,
    set_trainable,
    to_device,
    train_mode,
)

log = logging.getLogger(__name__)


@dataclass
class MemberState:
    net: Net
    optimiser: torch.optim.Optimizer | None = None
    params: list[nn.Parameter] = field(default_factory=list)
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    best_loss: float = float("inf")
    best_epoch: int = -1
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    active: bool = True
    history: list[dict[str, float]] = field(default_factory=list)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _phase(states: Sequence[MemberState], *, head: bool, cfg: TrainingSettings,
           steps: int, unfreeze: dict[str, list[str]]) -> None:
    for st in states:
        prefixes = head_blocks(st.net.arch) if head else later_blocks(st.net.arch, unfreeze)
        params = set_trainable(st.net.model, prefixes)
        if not params:  # e.g. an unfreeze list naming nothing: train the head at least
            params = set_trainable(st.net.model, head_blocks(st.net.arch))
        lr = cfg.head_lr if head else cfg.lr
        st.params = params
        st.optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
        st.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(st.optimiser, T_max=max(1, steps))


def _val_outputs(nets: Sequence[Net], images: Sequence[np.ndarray], device: torch.device,
                 batch_size: int) -> dict[tuple[object, ...], list[torch.Tensor]]:
    """Trunk outputs of the validation crops, once: the trunks are frozen."""
    cache: dict[tuple[object, ...], list[torch.Tensor]] = {}
    with torch.inference_mode():
        for key, indices in forward_groups(nets, device).items():
            first = nets[indices[0]]
            first.trunk.eval()
            outs = []
            for start in range(0, len(images), batch_size):
                x = to_batch(images[start:start + batch_size], first.input_size, first.mean,
                             first.std)
                x = x.to(device).contiguous(memory_format=torch.channels_last)  # type: ignore[attr-defined]
                with autocast(device):
                    outs.append(first.trunk(x).float())
            cache[key] = outs
    return cache


@dataclass(frozen=True)
class _Run:
    """What every epoch of one `train_members` call reads."""

    nets: Sequence[Net]
    train: Sequence[LabelledCrop]
    states: list[MemberState]
    groups: dict[tuple[object, ...], list[int]]
    y_train: np.ndarray
    y_val: torch.Tensor
    val_cache: dict[tuple[object, ...], list[torch.Tensor]]
    rng: np.random.Generator
    aug: Augment
    cfg: TrainingSettings
    device: torch.device


def _member_step(run: _Run, i: int, t: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> float:
    """One optimiser step of member `i` on a batch's trunk output; the weighted loss."""
    st = run.states[i]
    assert st.optimiser is not None and st.scheduler is not None
    with autocast(run.device):
        logits = st.net.head(t)
    per = nn.functional.cross_entropy(logits.float(), y, reduction="none",
                                      label_smoothing=run.cfg.label_smoothing)
    loss = (per * w).sum() / w.sum().clamp(min=1.0)
    st.optimiser.zero_grad(set_to_none=True)
    loss.backward()
    # SqueezeNet's logits come out of a ReLU: one big step can kill them all
    # (constant output, loss ln 3); clipping keeps fine-tuning out of that.
    nn.utils.clip_grad_norm_(st.params, 1.0)
    st.optimiser.step()
    st.scheduler.step()
    return float(loss.detach())


def _train_epoch(run: _Run) -> tuple[np.ndarray, int]:
    """One pass over the balanced, bagged training order: (summed loss per member, samples)."""
    cfg, device, states = run.cfg, run.device, run.states
    samples = [c.sample for c in run.train] if run.cfg.balance_samples else None
    order = balanced_indices(run.y_train, len(run.train), run.rng, samples)
    bags = run.rng.poisson(1.0, size=(len(states), len(order))).astype(np.float32)
    losses = np.zeros(len(states))
    for start in range(0, len(order), cfg.batch_size):
        idx = order[start:start + cfg.batch_size]
        images = [augment(run.train[i].image, run.rng, run.aug) for i in idx]
        y = torch.from_numpy(run.y_train[idx]).to(device)
        for indices in run.groups.values():
            members = [i for i in indices if states[i].active]
            if not members:
                continue
            first = run.nets[indices[0]]
            x = to_batch(images, first.input_size, first.mean, first.std)
            x = x.to(device).contiguous(memory_format=torch.channels_last)  # type: ignore[attr-defined]
            with torch.no_grad(), autocast(device):
                t = first.trunk(x)
            for i in members:
                w = torch.from_numpy(bags[i, start:start + len(idx)]).to(device)
                losses[i] += _member_step(run, i, t, y, w) * len(idx)
    return losses, len(order)


def _validate_member(run: _Run, i: int, key: tuple[object, ...], epoch: int, train_loss: float,
                     head_only: bool) -> str:
    """Score member `i` on validation, keep its best weights, stop it when out of patience."""
    st = run.states[i]
    st.net.model.eval()
    with torch.inference_mode(), autocast(run.device):
        logits = torch.cat([st.net.head(t) for t in run.val_cache[key]]).float()
    val_loss = float(nn.functional.cross_entropy(logits, run.y_val))
    val_acc = float((logits.argmax(1) == run.y_val).float().mean())
    st.history.append({"epoch": epoch + 1, "train_loss": train_loss,
                       "val_loss": val_loss, "val_accuracy": val_acc})
    if val_loss < st.best_loss - 1e-4:
        st.best_loss, st.best_epoch = val_loss, epoch + 1
        st.best_state = _snapshot(st.net.model)
        st.bad_epochs = 0
    elif not head_only:
        st.bad_epochs += 1
        if st.bad_epochs >= run.cfg.patience:
            st.active = False
    stop = "" if st.active else " (stops)"
    return f"m{i} loss {train_loss:.3f} val {val_loss:.3f} acc {val_acc:.3f}{stop}"


def _validate(run: _Run, epoch: int, losses: np.ndarray, n: int, head_only: bool) -> list[str]:
    """Validation and early stopping of the active members; one log part each."""
    parts = []
    for key, indices in run.groups.items():
        for i in indices:
            if run.states[i].active:
                parts.append(_validate_member(run, i, key, epoch, losses[i] / n, head_only))
    return parts


def _keep_best(states: Sequence[MemberState]) -> None:
    """Every member back to its best validation weights, frozen, in eval mode."""
    for st in states:
        if st.best_state is not None:
            st.net.model.load_state_dict(st.best_state)
        st.net.model.eval()
        for p in st.net.model.parameters():
            p.requires_grad_(False)


def train_members(
    nets: Sequence[Net],
    train: Sequence[LabelledCrop],
    val: Sequence[LabelledCrop],
    cfg: TrainingSettings,
    device: torch.device,
    *,
    progress: Callable[[str], None] | None = None,
) -> list[MemberState]:
    """Fine-tune every net in place (each ends with its best validation weights)."""
    to_device(nets, device)  # callers may pass nets still on the CPU
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    run = _Run(
        nets=nets, train=train, states=[MemberState(net) for net in nets],
        groups=forward_groups(nets, device),
        y_train=np.array([c.label for c in train], np.int64),
        y_val=torch.tensor([c.label for c in val], dtype=torch.long, device=device),
        val_cache=_val_outputs(nets, [c.image for c in val], device, 64),
        rng=rng, aug=augment_of(cfg), cfg=cfg,
        device=device,
    )
    steps = (len(train) + cfg.batch_size - 1) // cfg.batch_size
    total_epochs = cfg.head_epochs + cfg.max_epochs
    for epoch in range(total_epochs):
        head_only = epoch < cfg.head_epochs
        if epoch == 0 or epoch == cfg.head_epochs:
            _phase(run.states, head=head_only, cfg=cfg,
                   steps=steps * (cfg.head_epochs if head_only else cfg.max_epochs),
                   unfreeze=dict(cfg.unfreeze))
        active = [st for st in run.states if st.active]
        if not active:
            break
        started = time.monotonic()
        for st in active:
            train_mode(st.net.model)
        losses, n = _train_epoch(run)
        parts = _validate(run, epoch, losses, n, head_only)
        message = (f"epoch {epoch + 1}/{total_epochs} ({'head' if head_only else 'later blocks'}"
                   f", {time.monotonic() - started:.0f} s): " + "; ".join(parts))
        log.info("%s", message)
        if progress is not None:
            progress(message)
    _keep_best(run.states)
    return run.states
