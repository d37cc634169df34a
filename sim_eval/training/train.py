"""The training loop of ``python -m sim_eval.train``: a small ``Pi05Model`` from scratch on a training set.

Everything that defines the result is in the config (seeded), and everything it produces lands in ``out``:
``tokenizer.model``, ``sim_eval/checkpoints/step_NNNNNN/`` (LeRobot-format checkpoints of the EMA weights at
``save_at``),
``loss.jsonl`` and ``loss.png``. Images and labels live on the training device as tensors (a LIBERO training set is
a few GB of uint8 frames), so a step is a gather, an augmentation and the flow-matching loss.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from sim_eval.policies.pi05.config import GemmaSizes, ModelSizes, VisionSizes
from sim_eval.policies.pi05.model import Pi05Model
from sim_eval.policies.pi05.processing import Normalizer, PromptTokenizer
from sim_eval.training.config import AugmentConfig, ModelConfig, TrainConfig
from sim_eval.training.dataset import TrainingSet
from sim_eval.training.export_checkpoint import feature_stats, write_checkpoint
from sim_eval.training.flow import EMA, flow_matching_loss, init_weights, lr_at, sample_time
from sim_eval.training.tokenizer import train_tokenizer
from sim_eval.training.warm_start import WarmStart

# what training.json keeps of the set's meta: with ``suites`` (per suite: instructions, demos, held-out distances) a
# checkpoint says which suites and tasks it has seen
DATA_KEYS = ("suite", "suites", "episodes", "steps", "frames", "frame_stride", "dart", "held_out", "simulator")


def model_sizes(cfg: ModelConfig, vocab_size: int) -> ModelSizes:
    return ModelSizes(
        vlm=GemmaSizes(**asdict(cfg.vlm)),
        expert=GemmaSizes(**asdict(cfg.expert)),
        vision=VisionSizes(**asdict(cfg.vision)),
        vocab_size=int(vocab_size),
        max_action_dim=cfg.max_action_dim,
    )


def lerobot_norm(state_stats: dict, action_stats: dict) -> dict[str, Any]:
    """The ``Normalizer`` settings a written checkpoint is read back with (LeRobot's QUANTILES formula)."""
    return {"formula": "lerobot", "eps": 1e-8, "state_mode": "QUANTILES", "action_mode": "QUANTILES",
            "state": state_stats, "action": action_stats}  # fmt: skip


def prompt_tokens(tokenizer: PromptTokenizer, instructions: dict[int, str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(tasks, T) right-padded token ids and their mask, row = task id."""
    ids = {task: tokenizer.encode(text) for task, text in instructions.items()}
    n, t = max(ids) + 1, max(len(v) for v in ids.values())
    tokens, mask = torch.zeros(n, t, dtype=torch.long), torch.zeros(n, t, dtype=torch.bool)
    for task, row in ids.items():
        tokens[task, : len(row)] = torch.tensor(row)
        mask[task, : len(row)] = True
    return tokens, mask


def augment(images: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """uint8 (B, V, H, W, 3) -> float (B, V, 3, H, W) in [-1, 1], shifted and colour-jittered per sample and view."""
    b, v, h, w, _ = images.shape
    x = images.permute(0, 1, 4, 2, 3).reshape(b * v, 3, h, w).float() / 255.0
    dev = x.device

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return (torch.rand(shape, generator=gen) * (hi - lo) + lo).to(dev)

    if cfg.shift > 0:
        s = cfg.shift
        padded = F.pad(x, (s, s, s, s), mode="replicate")
        dx = torch.randint(0, 2 * s + 1, (b * v,), generator=gen).to(dev)
        dy = torch.randint(0, 2 * s + 1, (b * v,), generator=gen).to(dev)
        rows = (dy[:, None] + torch.arange(h, device=dev)[None])[:, None, :, None].expand(b * v, 3, h, w + 2 * s)
        x = padded.gather(2, rows)
        cols = (dx[:, None] + torch.arange(w, device=dev)[None])[:, None, None, :].expand(b * v, 3, h, w)
        x = x.gather(3, cols)
    if cfg.brightness > 0:
        x = x * uniform(1 - cfg.brightness, 1 + cfg.brightness, b * v, 1, 1, 1)
    if cfg.contrast > 0:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * uniform(1 - cfg.contrast, 1 + cfg.contrast, b * v, 1, 1, 1) + mean
    if cfg.saturation > 0:
        grey = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
        x = (x - grey) * uniform(1 - cfg.saturation, 1 + cfg.saturation, b * v, 1, 1, 1) + grey
    return (x.clamp(0.0, 1.0) * 2.0 - 1.0).reshape(b, v, 3, h, w)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def plot_loss(history: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [h["loss"] for h in history], lw=0.8, label="loss (mean over the logging window)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching MSE")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train(cfg: TrainConfig, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train and write everything to ``out``; returns a metrics dict (losses, checkpoints, timings)."""
    from tqdm import tqdm

    # a bad start refuses before anything is read or written
    warm = WarmStart.open(cfg.init_from) if cfg.init_from else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    data = TrainingSet.load(cfg.data)
    instructions = data.prompts()  # every (suite, task) of the set: the tokenizer and prompt table cover them all
    if data.meta["image_size"] != cfg.model.vision.image_size:
        raise ValueError(f"training set images are {data.meta['image_size']} px, "
                         f"model.vision.image_size is {cfg.model.vision.image_size}")  # fmt: skip
    if warm is None:
        tok_path = train_tokenizer(list(instructions.values()), out / "tokenizer.model")
    else:
        tok_path = warm.tokenizer(out / "tokenizer.model", list(instructions.values()))
    tokenizer = PromptTokenizer(tok_path, cfg.model.max_token_len)
    vocab = tokenizer.sp.get_piece_size()
    tokens, token_mask = prompt_tokens(tokenizer, instructions)

    # over every step of every suite in the set: one normalizer serves all of them, as pi05_libero's does
    if warm is None:
        state_stats = feature_stats(data.arrays["state"])
        action_stats = feature_stats(data.arrays["labels"])
    else:
        state_stats, action_stats = warm.stats()
    normalizer = Normalizer(lerobot_norm(state_stats, action_stats))
    chunks, valid = data.action_chunks(cfg.model.chunk_size)
    actions = torch.from_numpy(normalizer.normalize_actions(chunks)).to(device)
    valid = torch.from_numpy(valid).to(device)
    frames = torch.from_numpy(np.stack([data.images[v] for v in data.meta["views"]], axis=1)).to(device)
    frame_task = torch.from_numpy(data.frame_prompts()).to(device)  # the prompt row each frame is conditioned on
    tokens, token_mask = tokens.to(device), token_mask.to(device)

    sizes = model_sizes(cfg.model, vocab)
    model = init_weights(Pi05Model(sizes), cfg.seed)
    if warm is not None:
        warm.load_into(model)
    model = model.to(device).train()
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.optim.lr,
        betas=tuple(cfg.optim.betas),
        fused=device.type == "cuda",
    )
    ema = EMA(model, cfg.optim.ema_decay)
    loss_fn = flow_matching_loss
    if cfg.compile and device.type == "cuda":
        loss_fn = torch.compile(flow_matching_loss)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    gen = torch.Generator().manual_seed(cfg.seed)
    n_frames, bsz = len(frames), cfg.optim.batch_size

    stopped_at = None  # the step training ended at when a time limit cut it short of optim.steps
    saves = set(cfg.save_at)
    timed_from = time.perf_counter()
    history: list[dict[str, float]] = []
    window: list[torch.Tensor] = []
    saved: list[str] = []
    started = time.perf_counter()
    log_file = (out / "loss.jsonl").open("w")
    bar = tqdm(range(1, cfg.optim.steps + 1), desc="train", unit="step", disable=not progress)
    total = cfg.optim.steps  # the schedule's length; a time limit may shorten it once (below)
    for step in bar:
        if cfg.time_limit_s is not None and step == FIT_AFTER + 1:
            total = fit_schedule(cfg, step - 1, time.perf_counter() - started, time.perf_counter() - timed_from)
            saves = sorted({min(s, total) for s in cfg.save_at})
        if step == 2:  # step 1 includes compilation: time the steps after it
            timed_from = time.perf_counter()
        lr = lr_at(step - 1, cfg.optim.lr, cfg.optim.warmup, total, cfg.optim.final_lr)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, n_frames, (bsz,), generator=gen).to(device)
        images = augment(frames[idx], cfg.augment, gen)
        task = frame_task[idx]
        draws = bsz * cfg.optim.noise_samples
        noise = torch.randn((draws, cfg.model.chunk_size, sizes.max_action_dim), generator=gen).to(device)
        t = sample_time(draws, gen).to(device)
        with autocast:
            loss = loss_fn(model, images, tokens[task], token_mask[task], actions[idx], valid[idx], noise, t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()
        ema.update(model)
        window.append(loss.detach())
        if step % cfg.log_every == 0 or step == total:
            mean = float(torch.stack(window).mean())
            window.clear()
            if not math.isfinite(mean):
                raise FloatingPointError(f"loss is {mean} at step {step}: training diverged")
            entry = {"step": step, "loss": mean, "lr": lr, "grad_norm": float(grad_norm),
                     "elapsed_s": round(time.perf_counter() - started, 1)}  # fmt: skip
            history.append(entry)
            log_file.write(json.dumps(entry) + "\n")
            log_file.flush()
            bar.set_postfix(loss=f"{mean:.4f}", lr=f"{lr:.1e}")
        out_of_time = cfg.time_limit_s is not None and time.perf_counter() - started > cfg.time_limit_s
        if step in saves or out_of_time or step == total:
            ckpt = save(cfg, out, model, ema, sizes, state_stats, action_stats, tok_path, data, step, total, warm)
            saved.append(str(ckpt))
        if out_of_time or step == total:
            stopped_at = step if step < cfg.optim.steps else None
            break
    bar.close()
    log_file.close()
    plot_loss(history, out / "loss.png")
    metrics = {
        "steps": stopped_at or cfg.optim.steps,
        "schedule_steps": total,
        "stopped_by_time_limit": stopped_at is not None,
        "params": n_params,
        "first_loss": history[0]["loss"] if history else None,
        "final_loss": history[-1]["loss"] if history else None,
        "train_s": round(time.perf_counter() - started, 1),
        "checkpoints": saved,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }
    (out / "train_metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


FIT_AFTER = 200  # steps timed before a time limit fixes the schedule's length


def fit_schedule(cfg: TrainConfig, done: int, elapsed_s: float, timed_s: float) -> int:
    """The schedule length that ends within ``time_limit_s``: fixed once, after ``FIT_AFTER`` steps, from their
    measured time (so warm-up and cosine decay complete; the run stays reproducible given that length, which the
    metrics and checkpoints record). Never more than ``optim.steps``."""
    per_step = timed_s / max(1, done - 1)
    left = max(0.0, cfg.time_limit_s - elapsed_s) * 0.97  # saving checkpoints and the last steps' jitter
    return int(min(cfg.optim.steps, max(done + 1, done + left // per_step)))


def save(cfg, out, model, ema, sizes, state_stats, action_stats, tok_path, data, step, schedule_steps, warm) -> Path:
    """The EMA weights at ``step`` as a LeRobot checkpoint under ``out/checkpoints``."""
    shadow = Pi05Model(sizes)
    ema.copy_to(shadow)
    training = {
        "step": step,
        "schedule_steps": schedule_steps,
        "seed": cfg.seed,
        "data": {k: data.meta.get(k) for k in DATA_KEYS},
        "data_sha256": data.meta["sha256"],
        "config": _plain(cfg),
        "torch": torch.__version__,
        "init_from": warm.origin() if warm is not None else None,
    }
    return write_checkpoint(
        out / "checkpoints" / f"step_{step:06d}",
        shadow,
        sizes,
        state_stats=state_stats,
        action_stats=action_stats,
        tokenizer_model=tok_path,
        chunk_size=cfg.model.chunk_size,
        max_token_len=cfg.model.max_token_len,
        dtype=getattr(torch, cfg.checkpoint_dtype),
        training=training,
    )


def _plain(cfg: TrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(cfg), default=str))
