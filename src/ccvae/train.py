"""``ccvae train``: the training loop, the run folder, checkpoints and resume.

A run folder holds ``config.json``, ``log.txt``, ``metrics.csv``, ``losses.png``, TensorBoard
events (when tensorboard is installed) and ``checkpoints/{last,epoch_N}.pt``. Only rank 0
writes. Every random draw comes from generators whose states are checkpointed, so a resumed
run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import csv
import math
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ccvae import __version__
from ccvae.capture import CapturedStep
from ccvae.checkpoint import (
    load_checkpoint,
    model_from_checkpoint,
    read_run_config,
    save_checkpoint,
)
from ccvae.config import Config, TrainConfig
from ccvae.data.dataset import SpritesDataset
from ccvae.ema import WeightAverage
from ccvae.errors import TrainingDiverged, UserError
from ccvae.fileio import DirLock, atomic_path, ensure_writable, write_json
from ccvae.hardware import (
    DistInfo,
    has_instance_norm,
    init_distributed,
    resolve_memory_format,
    resolve_precision,
    seed_everything,
    shutdown_distributed,
)
from ccvae.methods import METHODS, Method, StepContext, build_method
from ccvae.model import CCVAE


def metric_fields(method: type[Method] | Method) -> tuple[str, ...]:
    """The columns of a run's metrics.csv: position, the method's terms and diagnostics, lr, throughput."""
    return ("epoch", "step", "images", "wall_s", *method.TERMS, *method.DIAGNOSTICS, "lr", "images_per_s")


METRIC_FIELDS = metric_fields(METHODS["ccvae"])


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    wall_s: float
    interrupted: bool = False


def lr_factor(t: TrainConfig, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """Learning-rate multiplier at ``step`` (0-based): a function of the step alone, so resume needs no state.

    ``step``: x lr_decay_factor every lr_decay_epochs epochs (the authors' StepLR), or every lr_decay_steps
    steps where that is set; ``cosine``: half a cosine from 1 to 0 over the run (Loshchilov & Hutter 2017,
    without restarts).
    """
    if t.lr_schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    if t.lr_decay_steps:
        return t.lr_decay_factor ** (step // t.lr_decay_steps)
    return t.lr_decay_factor ** ((step // steps_per_epoch) // t.lr_decay_epochs)


def _ramp(step: int, steps: int) -> float:
    """A linear rise from 0 to 1 over ``steps`` steps (0: 1 from the start)."""
    return min(1.0, step / steps) if steps else 1.0


def _gen_state(g: torch.Generator) -> torch.Tensor:
    return g.get_state().clone()


class Trainer:
    """Holds the model, optimisers, generators and the run folder; ``run()`` trains."""

    def __init__(self, cfg: Config, data: SpritesDataset, run_dir: Path, device: torch.device,
                 dist: DistInfo | None = None, quiet: bool = False, fast: bool = True) -> None:
        self.cfg, self.data, self.run_dir, self.device = cfg, data, Path(run_dir), device
        self.dist = dist or DistInfo()
        self.quiet = quiet
        t = cfg.train
        if t.batch_size % self.dist.world_size:
            raise UserError(f"train.batch_size {t.batch_size} is not divisible by the {self.dist.world_size} processes")
        self.local_batch = t.batch_size // self.dist.world_size
        self.precision = resolve_precision(t.precision, device)
        self.steps_per_epoch = data.n_images("train") // t.batch_size
        if self.steps_per_epoch < 1:
            raise UserError(f"{data.source}: the train split has {data.n_images('train')} images, fewer than one batch of {t.batch_size}")
        total = t.epochs * self.steps_per_epoch
        self.total_steps = min(total, t.max_steps) if t.max_steps else total

        seed_everything(t.seed + self.dist.rank)
        try:
            self.model = CCVAE(cfg.model).to(device)
        except ValueError as e:  # an architecture the image size does not allow
            raise UserError(f"invalid model config: {e}") from None
        self.method = build_method(cfg, self.model, fast=fast).to(device)
        self.memory_format = resolve_memory_format(
            t.memory_format, device, self.precision,
            has_instance_norm=has_instance_norm(self.method))
        if self.memory_format == "channels_last":  # 4-D weights only; before the optimisers, whose state follows
            self.method.to(memory_format=torch.channels_last)
        # The weights' moving average (train.ema_decay), in the layout just chosen; evaluation scores it.
        self.ema = WeightAverage(self.model, t.ema_decay) if t.ema_decay else None
        self.step_module: nn.Module = self.method
        if self.dist.enabled:
            # Each mode uses part of the parameters (the ccvae reverse step: not the decoder, logvar and s heads).
            self.step_module = nn.parallel.DistributedDataParallel(
                self.method, find_unused_parameters=True,
                device_ids=[device.index] if device.type == "cuda" else None)
        if t.compile != "off":
            # Dynamo specialises on the mode string, so each loss computation gets its own graph.
            self.step_module = torch.compile(self.step_module, mode=t.compile, dynamic=False)
        # Per-rank streams for sampling and noise; the epoch order is shared (seeded per epoch).
        self.g_data = torch.Generator(device=device).manual_seed(t.seed * 7919 + self.dist.rank)
        self.g_noise = torch.Generator(device=device).manual_seed(t.seed * 7919 + 104729 + self.dist.rank)
        self.captured: CapturedStep | None = None
        if t.capture != "off":
            blocker = (f"needs a CUDA device (this run is on {device.type})" if device.type != "cuda"
                       else "runs in one process only (not under DDP)" if self.dist.enabled
                       else self.method.capture_blocker())
            if blocker:
                raise UserError(f"train.capture={t.capture}: {blocker}")
            self.use_captured_step()  # builds the optimisers the captured step needs
        else:
            self.build_optimizers()
        self.step = 0
        self.wall_s = 0.0
        self._stop = False

    def build_optimizers(self) -> None:
        """The method's optimisers, and each group's lr as built (a discriminator may have its own), which the
        schedule scales."""
        self.optimizers = self.method.make_optimizers()
        self.base_lrs = {k: [float(g["lr"]) for g in o.param_groups] for k, o in self.optimizers.items()}

    def use_captured_step(self, use_graph: bool = True, own_generators: bool | None = None) -> None:
        """Run every step through ``CapturedStep``: the whole step replayed as a CUDA graph, drawing from the
        device's default generator (see capture.py). ``use_graph=False`` takes the same path without a graph,
        by default with the run's own generators (``own_generators``): what the tests compare against."""
        own = (not use_graph) if own_generators is None else own_generators
        if own and use_graph:
            raise ValueError("a captured graph draws from the device's default generator")
        self.method.capturable = True
        self.build_optimizers()  # tensor learning rates, capturable Adam
        g_data, g_noise = (self.g_data, self.g_noise) if own else (None, None)

        def make_ctx(flat: torch.Tensor, step: int) -> StepContext:
            return StepContext(self.data, flat, g_data, g_noise, self.device, self.precision, step, self.method,
                               self.optimizers)

        self.captured = CapturedStep(self.method, self.optimizers, make_ctx, self.local_batch, self.device,
                                     use_graph)

    # -- state -----------------------------------------------------------------------
    def state(self) -> dict:
        rng = {"data": _gen_state(self.g_data), "noise": _gen_state(self.g_noise), "torch": torch.get_rng_state()}
        if self.device.type == "cuda":  # the default generator: what a captured step draws from
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        rngs = [rng]
        if self.dist.enabled:
            import torch.distributed as dist
            rngs = [None] * self.dist.world_size
            dist.all_gather_object(rngs, {k: v.cpu() for k, v in rng.items()})
        averaged = {"ema": self.ema.state_dict()} if self.ema is not None else {}
        return {
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            **averaged,
            "method": self.method.name,
            "extras": self.method.extras.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "step": self.step,
            "wall_s": self.wall_s,
            "world_size": self.dist.world_size,
            "rng": rngs,
        }

    def load_state(self, state: dict, path: Path) -> None:
        model, _ = model_from_checkpoint(state, path, self.cfg, weights="live")
        self.model.load_state_dict(model.state_dict())
        try:
            if self.ema is not None:
                if "ema" not in state:
                    raise UserError(f"{path}: no averaged weights, but the run's config has train.ema_decay > 0")
                self.ema.load_state_dict(state["ema"])
            if state.get("method", "ccvae") != self.method.name:
                raise UserError(f"{path}: trained with method {state.get('method', 'ccvae')}, not {self.method.name}")
            self.method.extras.load_state_dict(state.get("extras", {}))
            # Checkpoints before the methods package named the two ccvae optimisers opt_fwd / opt_rev.
            saved = state.get("optimizers") or {"fwd": state["opt_fwd"], "rev": state["opt_rev"]}
            if set(saved) != set(self.optimizers):
                raise KeyError(f"optimizers {sorted(saved)}, expected {sorted(self.optimizers)}")
            for k, opt in self.optimizers.items():
                # How this run steps stays as built (the checkpoint may come from an eager or a captured run):
                # the implementation flags, and the lr as a float or, for a captured step, a device tensor.
                kept = [({f: g[f] for f in ("capturable", "fused", "foreach") if f in g}, torch.is_tensor(g["lr"]))
                        for g in opt.param_groups]
                opt.load_state_dict(saved[k])
                for group, (flags, tensor_lr) in zip(opt.param_groups, kept, strict=True):
                    group.update(flags)
                    lr = float(group["lr"])
                    group["lr"] = torch.tensor(lr, device=self.device) if tensor_lr else lr
            if state["world_size"] != self.dist.world_size:
                raise UserError(f"{path}: saved by {state['world_size']} process(es); resume with the same number "
                                f"(now {self.dist.world_size})")
            rng = state["rng"][self.dist.rank]
            self.g_data.set_state(rng["data"].to(self.g_data.get_state().device))
            self.g_noise.set_state(rng["noise"].to(self.g_noise.get_state().device))
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as e:
            raise UserError(f"{path}: checkpoint does not fit this run ({type(e).__name__}: {e})") from None
        self.step = int(state["step"])
        self.wall_s = float(state["wall_s"])

    def save(self, epoch_copy: int | None = None) -> None:
        state = self.state()  # collective under DDP: every rank takes part
        if not self.dist.is_main:
            return
        ckpt = self.run_dir / "checkpoints"
        save_checkpoint(ckpt / "last.pt", state)
        if epoch_copy is not None:
            try:
                with atomic_path(ckpt / f"epoch_{epoch_copy}.pt") as tmp:
                    shutil.copyfile(ckpt / "last.pt", tmp)
            except OSError as e:
                raise UserError(f"{ckpt / f'epoch_{epoch_copy}.pt'}: cannot write ({e.strerror or e}); "
                                f"checkpoints/last.pt is complete") from None

    # -- one step ----------------------------------------------------------------------
    def epoch_order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator(device=self.device).manual_seed(self.cfg.train.seed * 1_000_003 + epoch)
        return self.data.flat_order("train", g)

    def train_step(self, flat: torch.Tensor) -> torch.Tensor:
        """One step of the method on this rank's batch, then ``self.step`` advances by one; returns (values, ran) of
        its terms as a (2T,) tensor.

        The step counts itself so that no caller (the loop, the benchmarks, the tests) can run every step at a frozen
        count, i.e. with the lr, the KL ramps and the step's form (``train.reverse_every``) of step 0 throughout.
        """
        t = self.cfg.train
        factor = lr_factor(t, self.step, self.steps_per_epoch, self.total_steps)
        for name, opt in self.optimizers.items():
            for group, base in zip(opt.param_groups, self.base_lrs[name], strict=True):
                if torch.is_tensor(group["lr"]):
                    group["lr"].fill_(base * factor)  # in place: a captured graph reads this tensor
                else:
                    group["lr"] = base * factor
        self.method.kl_scale.fill_(_ramp(self.step, t.kl_warmup_steps))
        self.method.kl_capacity.fill_(t.kl_capacity * _ramp(self.step, t.kl_capacity_steps))
        if self.captured is not None:
            values, ran = self.captured(flat, self.step)
        else:
            ctx = StepContext(self.data, flat, self.g_data, self.g_noise, self.device, self.precision, self.step,
                              self.step_module, self.optimizers)
            values, ran = self.method.train_step(ctx)
        self.step += 1
        return torch.cat([values, ran])

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> TrainResult:
        t = self.cfg.train
        main = self.dist.is_main
        logger = RunLogger(self.run_dir, metric_fields(self.method), enabled=main)
        logger.log(f"ccvae {__version__} | method {self.method.name} | device {self.device} | precision {self.precision} | "
                   f"{self.memory_format} | {self.dist.world_size} process(es) | {self.model.num_parameters():,} parameters | "
                   f"{self.steps_per_epoch} steps/epoch | {self.total_steps} steps | from step {self.step}")
        bar = tqdm(total=self.total_steps, initial=self.step, disable=self.quiet or not main,
                   unit="step", dynamic_ncols=True, file=sys.stderr)
        old_handlers = _install_stop_handlers(self)
        buf = torch.zeros(t.log_every, 2 * len(self.method.TERMS), device=self.device)
        n_buf, interval_start, interval_step = 0, time.perf_counter(), self.step
        order, order_epoch = None, -1
        try:
            while self.step < self.total_steps:
                epoch, i = divmod(self.step, self.steps_per_epoch)
                if epoch != order_epoch:
                    order, order_epoch = self.epoch_order(epoch), epoch
                lo = i * t.batch_size + self.dist.rank * self.local_batch
                buf[n_buf] = self.train_step(order[lo:lo + self.local_batch])
                if self.ema is not None:
                    self.ema.update(self.model)
                n_buf += 1
                epoch_done = self.step % self.steps_per_epoch == 0
                finished = self.step >= self.total_steps
                save_now = self.step % t.checkpoint_every == 0 or epoch_done or finished
                stop = self._stop_requested(n_buf == t.log_every or save_now)
                if n_buf == t.log_every or save_now or stop:
                    now = time.perf_counter()
                    self.wall_s += now - interval_start
                    row = self._flush(buf[:n_buf], interval_step, now - interval_start)
                    logger.metrics(row)
                    bar.set_postfix({k[:6]: f"{row[k]:.3g}" for k in self.method.TERMS},
                                    img_s=f"{row['images_per_s']:.0f}")
                    n_buf, interval_start, interval_step = 0, time.perf_counter(), self.step
                if save_now or stop:
                    keep = epoch + 1 if epoch_done and ((epoch + 1) % t.keep_every_epochs == 0 or finished) else None
                    self.save(epoch_copy=keep)
                    interval_start = time.perf_counter()
                bar.update(1)
                if stop:
                    logger.log(f"interrupted at step {self.step}; checkpoint saved; resume with --resume")
                    return TrainResult(self.run_dir, self.step, self.wall_s, interrupted=True)
        finally:
            bar.close()
            _restore_handlers(old_handlers)
            logger.close()
        logger.log(f"done: {self.step} steps in {self.wall_s:.1f} s of training")
        if self.dist.enabled:
            logger.log(f"replicas identical across {self.dist.world_size} ranks: {self._replicas_identical()}")
        if main:
            from ccvae.figures import plot_losses
            plot_losses(self.run_dir / "metrics.csv", self.run_dir / "losses.png")
        return TrainResult(self.run_dir, self.step, self.wall_s)

    def _replicas_identical(self) -> bool:
        """DDP keeps every rank's weights equal (discriminators included); check it with one all-gather of a checksum."""
        import torch.distributed as dist
        flat = torch.cat([p.detach().double().flatten() for p in self.method.parameters()])
        mine = torch.stack([flat.sum(), (flat * torch.arange(len(flat), device=flat.device) % 9973).sum()])
        every = [torch.zeros_like(mine) for _ in range(self.dist.world_size)]
        dist.all_gather(every, mine)
        return all(torch.equal(every[0], e) for e in every[1:])

    def _stop_requested(self, at_sync_point: bool) -> bool:
        """Ctrl-C / SIGTERM. Under DDP every rank must stop at the same step, so agree at sync points."""
        if not self.dist.enabled:
            return self._stop
        if not at_sync_point:
            return False
        import torch.distributed as dist
        flag = torch.tensor([float(self._stop)], device=self.device)
        dist.all_reduce(flag)
        return bool(flag.item() > 0)

    def _flush(self, losses: torch.Tensor, first_step: int, seconds: float) -> dict:
        """One host sync per interval: check every step's terms for NaN/Inf, then average."""
        vals = losses.detach().cpu()
        if self.dist.enabled:
            import torch.distributed as dist
            gathered = losses.detach().clone()
            dist.all_reduce(gathered)  # sum over ranks; NaN anywhere stays NaN
            vals = gathered.cpu() / self.dist.world_size
        n_terms = len(self.method.TERMS)
        values, ran = vals[:, :n_terms], vals[:, n_terms:]
        bad = ~torch.isfinite(values) & (ran > 0)
        if bad.any():
            r, c = (int(v) for v in bad.nonzero()[0])
            last = self.run_dir / "checkpoints" / "last.pt"
            kept = (f"the last good checkpoint is {last}" if last.is_file() else
                    "no checkpoint had been written yet, so nothing of the run is kept")
            raise TrainingDiverged(
                f"the {self.method.TERMS[c]} loss is {values[r, c].item()} at step {first_step + r + 1}; training stopped, {kept}")
        n_ran = ran.sum(0)
        # A term skipped at some steps (the ccvae reverse cycle with reverse_every > 1) averages the steps it ran.
        means = torch.where(ran > 0, values, torch.zeros_like(values)).sum(0) / n_ran.clamp(min=1)
        means = torch.where(n_ran > 0, means, torch.full_like(means, float("nan")))
        return {
            "epoch": (self.step - 1) // self.steps_per_epoch + 1,
            "step": self.step,
            "images": self.step * self.cfg.train.batch_size,
            "wall_s": round(self.wall_s, 3),
            **{k: means[i].item() for i, k in enumerate(self.method.TERMS)},
            **self.method.diagnostics(),
            "lr": next(iter(self.optimizers.values())).param_groups[0]["lr"],
            "images_per_s": len(vals) * self.cfg.train.batch_size / max(seconds, 1e-9),
        }


def _install_stop_handlers(trainer: Trainer):
    def handler(signum, frame):
        trainer._stop = True

    try:
        return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread (e.g. called from a worker thread): no handlers
        return {}


def _restore_handlers(old: dict) -> None:
    for s, h in old.items():
        signal.signal(s, h)


class RunLogger:
    """log.txt, metrics.csv and TensorBoard; a no-op on ranks other than 0."""

    def __init__(self, run_dir: Path, fields: tuple[str, ...], enabled: bool = True) -> None:
        self.enabled = enabled
        self.run_dir = run_dir
        self.fields = fields
        self.tb = None
        if not enabled:
            return
        self.metrics_path = run_dir / "metrics.csv"
        if not self.metrics_path.exists():
            with open(self.metrics_path, "w", newline="") as f:
                csv.writer(f).writerow(fields)
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:  # tensorboard is optional
            self.tb = None

    def log(self, msg: str) -> None:
        if not self.enabled:
            return
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        with open(self.run_dir / "log.txt", "a") as f:
            f.write(line + "\n")

    def metrics(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.metrics_path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row[k]) for k in self.fields])
        self.log(" ".join(f"{k}={_fmt(row[k])}" for k in self.fields))
        if self.tb is not None:
            for k in self.fields[4:]:
                self.tb.add_scalar(f"train/{k}", row[k], row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics rows logged after ``step`` (work since the checkpoint is redone on resume)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    # A row cut short by a kill (appends are not atomic) is dropped with the rows past the checkpoint.
    kept = [r for r in body if len(r) == len(header) and r[1].isdigit() and int(r[1]) <= step]
    if len(kept) != len(body):
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(kept)


# What a run folder holds (besides its lock); leftovers of a start that wrote no checkpoint are cleared.
RUN_FILES = ("config.json", "log.txt", "metrics.csv", "losses.png", "tensorboard", "checkpoints", "eval", "report")


def _has_checkpoint(run_dir: Path) -> bool:
    return any((run_dir / "checkpoints").glob("*.pt"))


def prepare_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuse to overwrite a run; let a folder whose start failed before its first checkpoint be reused."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: exists and is not a folder; choose another --out")
    if resume:
        if not (run_dir / "checkpoints" / "last.pt").is_file():
            if (run_dir / "checkpoints" / "last.prev.pt").is_file():
                raise UserError(f"{run_dir}: checkpoints/last.pt is missing; copy checkpoints/last.prev.pt "
                                "over it to resume from the previous checkpoint")
            raise UserError(f"{run_dir}: no checkpoint to resume from (the run stopped before its first one); "
                            f"start it again without --resume")
        return
    if _has_checkpoint(run_dir):
        raise UserError(f"{run_dir}: already holds a trained run; pass --resume to continue it or choose another --out")
    if run_dir.is_dir():
        foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_FILES and p.name != ".lock")
        if foreign:
            raise UserError(f"{run_dir}: not empty and not a ccvae run folder ({', '.join(foreign[:3])}); "
                            "choose another --out")


def _clear_failed_start(run_dir: Path, created: bool) -> None:
    """Remove what a start that wrote no checkpoint left, so the same command can simply be run again."""
    if _has_checkpoint(run_dir):
        return
    if created:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for name in RUN_FILES + (".lock",):
        p = run_dir / name
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def train(cfg: Config, data_path: Path, run_dir: Path, device_name: str = "auto", resume: bool = False,
          quiet: bool = False, resume_overrides: dict | None = None) -> TrainResult:
    """Train (or resume) a run. ``resume_overrides`` may change ``epochs`` / ``max_steps`` of a resumed run.

    Everything is checked (config, data, model, checkpoint) before the first file is written; one
    process owns the folder (``DirLock``); a start that fails before its first checkpoint leaves
    nothing that blocks running the same command again.
    """
    dist, device = init_distributed(device_name)
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    lock = DirLock(run_dir) if dist.is_main else None
    try:
        if dist.is_main:
            prepare_run_dir(run_dir, resume)
            for stale in (run_dir / "checkpoints").glob(".*.tmp"):  # a kill -9 mid-save; we hold the lock
                stale.unlink(missing_ok=True)
        state = None
        if resume:
            cfg = read_run_config(run_dir)
            for k, v in (resume_overrides or {}).items():
                setattr(cfg.train, k, v)
            cfg.validate()
            state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        data = SpritesDataset.load(data_path, device)
        size = int(data.images.shape[2])
        if size != cfg.model.image_size:
            raise UserError(f"model.image_size is {cfg.model.image_size} but the images of {data_path} are "
                            f"{size} px; set model.image_size={size}")
        trainer = Trainer(cfg, data, run_dir, device, dist, quiet=quiet)
        if state is not None:
            trainer.load_state(state, run_dir / "checkpoints" / "last.pt")
            if trainer.total_steps < trainer.step:
                raise UserError(f"{run_dir}: the run is already at step {trainer.step}, past the new target of "
                                f"{trainer.total_steps} steps; give --max-steps / --epochs that reach at least "
                                f"step {trainer.step}")
        if dist.is_main:
            ensure_writable(run_dir / "checkpoints", "run folder")
            if state is not None:
                truncate_metrics(run_dir / "metrics.csv", trainer.step)
            meta = {**cfg.to_dict(), "ccvae_version": __version__, "data": str(data_path),
                    "device": str(device), "precision": trainer.precision,
                    "memory_format": trainer.memory_format, "world_size": dist.world_size,
                    "parameters": trainer.model.num_parameters(), "steps_per_epoch": trainer.steps_per_epoch,
                    "total_steps": trainer.total_steps,
                    "data_fingerprint": data.fingerprint()}
            write_json(run_dir / "config.json", meta)
        return trainer.run()
    except BaseException:
        if dist.is_main and not resume:
            _clear_failed_start(run_dir, created)
        raise
    finally:
        if lock is not None:
            lock.release()
        if dist.enabled:
            shutdown_distributed()
