"""The training loop with the GPU memory techniques, resumable.

Memory techniques, each really acting:
- gradient checkpointing: Hugging Face's `gradient_checkpointing_enable` (non-reentrant
  torch.utils.checkpoint) on the encoder: the trainable layers keep no activations in the
  forward pass and recompute them in the backward pass;
- batch size "auto": start large, halve on out-of-memory and redo the step (a `Faults` hook can
  raise the same out-of-memory error for batches above a limit, so it is testable);
- mixed precision "auto": bf16 autocast on CUDA devices that support it, else fp16 with a
  gradient scaler; off on CPU. Whether CPU bf16 pays off depends on the CPU (AVX512-BF16 or AMX
  help, plain AVX2 does not), and fp32 keeps CPU results the same on every machine; "bf16" asks
  for CPU autocast explicitly (bench/bench_training.py measures the ratio).

Checkpoints (every `checkpointEverySteps` and at each epoch end) hold the trainable weights, the
optimizer, the position in the epoch, the batch size found and the RNG state, so a resumed run
ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from aiops.training.checkpoints import latest_checkpoint, save_checkpoint
from aiops.training.model import (
    MAX_LENGTH,
    TRAINABLE_LAYERS,
    TextClassifier,
    freeze_lower_layers,
    load_pretrained,
    save_classifier,
)

AUTO_MAX_BATCH = 128
MIN_STEPS_PER_EPOCH = 4  # "auto" never starts so large that an epoch is fewer steps than this
ENCODER_LR_FACTOR = 0.1  # pretrained layers move slower than the fresh head

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """Raised by the `Faults` hook to stop a run after N steps, as a kill would."""


@dataclass(frozen=True)
class TrainSettings:
    base_model: str
    epochs: int = 3
    batch_size: int | str = "auto"
    learning_rate: float = 1e-3
    gradient_checkpointing: bool = False
    mixed_precision: str = "auto"
    checkpoint_every: int = 200
    seed: int = 42
    trainable_layers: int = TRAINABLE_LAYERS
    max_length: int = MAX_LENGTH

    @classmethod
    def from_spec(cls, training: Any) -> TrainSettings:
        return cls(base_model=training.base_model, epochs=training.epochs, batch_size=training.batch_size,
                   learning_rate=training.learning_rate, gradient_checkpointing=training.gradient_checkpointing,
                   mixed_precision=training.mixed_precision, checkpoint_every=training.checkpoint_every_steps,
                   seed=training.seed)


@dataclass
class Faults:
    """Fault injection for tests: a memory limit expressed as a batch size, and a stop after N steps
    (an exception in-process, or SIGKILL of the worker itself when `kill`)."""

    oom_above_batch: int | None = None
    stop_after_steps: int | None = None
    kill: bool = False
    oom_seen: list[int] = field(default_factory=list)

    @classmethod
    def from_env(cls) -> Faults:
        def number(name: str) -> int | None:
            value = os.environ.get(name)
            return int(value) if value else None

        return cls(oom_above_batch=number("AIOPS_TRAIN_FAULT_OOM_ABOVE_BATCH"),
                   stop_after_steps=number("AIOPS_TRAIN_FAULT_KILL_AFTER_STEPS"), kill=True)

    def before_step(self, batch_size: int) -> None:
        if self.oom_above_batch is not None and batch_size > self.oom_above_batch:
            self.oom_seen.append(batch_size)
            raise torch.OutOfMemoryError(f"simulated out of memory: batch {batch_size} > {self.oom_above_batch}")

    def after_step(self, step: int) -> None:
        if self.stop_after_steps is not None and step >= self.stop_after_steps:
            if self.kill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise Interrupted(f"stopped after step {step}")


def resolve_precision(mode: str, device: torch.device) -> str:
    """'bf16', 'fp16' or 'off' for the requested mode on this device."""
    if mode == "off":
        return "off"
    if device.type == "cuda":
        if mode == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return mode
    return "off" if mode == "auto" else mode  # explicit bf16/fp16 on CPU: honoured, CPU autocast has both


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def auto_start_batch(train_rows: int) -> int:
    """The largest power of two up to AUTO_MAX_BATCH that still gives MIN_STEPS_PER_EPOCH steps."""
    size = 1
    while size * 2 <= min(AUTO_MAX_BATCH, max(1, train_rows // MIN_STEPS_PER_EPOCH)):
        size *= 2
    return size


def fingerprint(settings: TrainSettings, dataset_version: str, labels: list[str]) -> str:
    """What a checkpoint must match to be resumed: everything but the checkpoint interval."""
    data = {**asdict(settings), "checkpoint_every": None, "dataset": dataset_version, "labels": labels}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def collate(encoded: list[list[int]], indices: list[int], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Pads one batch to its longest row (dynamic padding: short batches stay cheap)."""
    rows = [encoded[i] for i in indices]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def build_optimizer(model: TextClassifier, lr: float) -> torch.optim.Optimizer:
    encoder = [p for p in model.encoder.parameters() if p.requires_grad]
    return torch.optim.AdamW([{"params": encoder, "lr": lr * ENCODER_LR_FACTOR},
                              {"params": list(model.head.parameters()), "lr": lr}])


def trainable_state(model: TextClassifier) -> dict[str, torch.Tensor]:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {n: t.detach().cpu().clone() for n, t in model.state_dict().items() if n in names}


@dataclass
class Progress:
    step: int = 0
    epoch: int = 0
    position: int = 0  # rows of this epoch's order already trained on
    batch_size: int = 0
    loss_sum: float = 0.0  # over the current epoch, for finalLoss
    loss_count: int = 0
    oom_retries: int = 0
    last_epoch_loss: float | None = None


def enable_checkpointing(model: TextClassifier) -> None:
    """Non-reentrant torch.utils.checkpoint on the trainable encoder layers.

    Hugging Face also makes the embeddings' output require grad (needed by reentrant checkpointing
    only), which would make autograd record the whole frozen stack: that hook is removed, and the
    frozen layers, which keep no activations anyway, are not checkpointed."""
    encoder = model.encoder
    enable = getattr(encoder, "activation_checkpointing_enable", None)
    if enable is not None:  # transformers 5 renamed gradient_checkpointing_enable
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if getattr(encoder, "_require_grads_hook", None) is not None:
        encoder.disable_input_require_grads()
    for layer in encoder.encoder.layer:
        layer.gradient_checkpointing = any(p.requires_grad for p in layer.parameters())


def prepare_model(settings: TrainSettings, num_labels: int, device: torch.device) -> tuple[TextClassifier, Any]:
    model, tokenizer = load_pretrained(settings.base_model, num_labels, settings.seed)
    freeze_lower_layers(model, settings.trainable_layers)
    if settings.gradient_checkpointing:
        enable_checkpointing(model)
    return model.to(device).train(), tokenizer


def train_step(model: TextClassifier, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
               batch: dict[str, torch.Tensor], targets: torch.Tensor, precision: str) -> float:
    device_type = targets.device.type
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    try:
        with torch.autocast(device_type, dtype=dtype, enabled=precision != "off"):
            loss = F.cross_entropy(model(**batch).float(), targets)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return float(loss.detach())
    finally:
        optimizer.zero_grad(set_to_none=True)


def restore(state: dict[str, Any], model: TextClassifier, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler | None) -> Progress:
    """Loads a checkpoint into the fresh model and optimizer; returns where training stood."""
    model.load_state_dict(state["trainable"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return Progress(**state["progress"])


def halve_batch(progress: Progress, device: torch.device) -> None:
    progress.batch_size //= 2
    progress.oom_retries += 1
    log.warning("out of memory at batch size %d: retrying with %d", progress.batch_size * 2, progress.batch_size)
    if device.type == "cuda":
        torch.cuda.empty_cache()


def train_classifier(settings: TrainSettings, texts: list[str], targets: list[int], labels: list[str],
                     run_dir: Path, dataset_version: str, device: torch.device | None = None,
                     faults: Faults | None = None, report: Callable[..., None] | None = None) -> dict[str, Any]:
    """Trains (or resumes) and saves the final classifier to `run_dir/model`; returns the result.
    `report(force=..., **fields)`: told the progress after every step and each epoch's end
    (aiops.worker.progress.Reporter keeps the rate down)."""
    faults = faults or Faults()
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(settings.mixed_precision, device)
    model, tokenizer = prepare_model(settings, len(labels), device)
    optimizer = build_optimizer(model, settings.learning_rate)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" and device.type == "cuda" else None
    auto = settings.batch_size == "auto"
    progress = Progress(batch_size=auto_start_batch(len(texts)) if auto else int(settings.batch_size))
    ckpt_dir, mark = run_dir / "checkpoints", fingerprint(settings, dataset_version, labels)
    state = latest_checkpoint(ckpt_dir, mark)
    if state is not None:
        progress = restore(state, model, optimizer, scaler)
        log.info("resuming from step %d (epoch %d, row %d)", progress.step, progress.epoch, progress.position)
    resumed_from = progress.step

    def checkpoint() -> None:
        save_checkpoint(ckpt_dir, progress.step, {
            "fingerprint": mark, "progress": asdict(progress), "trainable": trainable_state(model),
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else None,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None})

    encoded = tokenizer(texts, truncation=True, max_length=settings.max_length)["input_ids"]
    target_tensor = torch.tensor(targets, dtype=torch.long)
    samples, started = 0, time.perf_counter()

    def tell(force: bool = False) -> None:
        if report is None:
            return
        elapsed = time.perf_counter() - started
        loss = progress.loss_sum / progress.loss_count if progress.loss_count else progress.last_epoch_loss
        report(force=force, epoch=min(progress.epoch + 1, settings.epochs), epochs=settings.epochs,
               steps=progress.step, loss=None if loss is None else round(loss, 6),
               samplesPerSecond=round(samples / elapsed, 2) if samples and elapsed > 0 else None,
               percent=100.0 * (progress.epoch + progress.position / max(len(texts), 1)) / settings.epochs)

    while progress.epoch < settings.epochs:
        order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(settings.seed + progress.epoch))
        while progress.position < len(texts):
            indices = order[progress.position:progress.position + progress.batch_size].tolist()
            batch = collate(encoded, indices, tokenizer.pad_token_id, device)
            try:
                faults.before_step(progress.batch_size)
                loss = train_step(model, optimizer, scaler, batch, target_tensor[indices].to(device), precision)
            except (torch.OutOfMemoryError, RuntimeError) as e:
                if not (auto and is_out_of_memory(e) and progress.batch_size > 1):
                    raise
                halve_batch(progress, device)
                continue  # the same rows again, in smaller batches
            progress.position += len(indices)
            progress.step += 1
            progress.loss_sum += loss * len(indices)
            progress.loss_count += len(indices)
            samples += len(indices)
            faults.after_step(progress.step)
            if progress.step % settings.checkpoint_every == 0:
                checkpoint()
            tell()
        progress.last_epoch_loss = progress.loss_sum / max(progress.loss_count, 1)
        progress.epoch, progress.position, progress.loss_sum, progress.loss_count = progress.epoch + 1, 0, 0.0, 0
        checkpoint()
        tell(force=True)
    elapsed = time.perf_counter() - started
    model.eval()
    save_classifier(model.cpu(), tokenizer, {"labels": labels, "maxLength": settings.max_length,
                                             "baseModel": settings.base_model, "datasetVersion": dataset_version},
                    run_dir / "model")
    return {"ok": True, "epochs": settings.epochs, "steps": progress.step, "batchSize": progress.batch_size,
            "samplesPerSecond": round(samples / elapsed, 2) if elapsed > 0 and samples else None,
            "finalLoss": None if progress.last_epoch_loss is None else round(progress.last_epoch_loss, 6),
            "resumedFromStep": resumed_from,
            "device": device.type, "mixedPrecision": precision,
            "gradientCheckpointing": settings.gradient_checkpointing, "oomRetries": progress.oom_retries,
            "fingerprint": mark}
