"""Device and precision choice, seeding and distributed setup: the only place that looks at hardware."""

from __future__ import annotations

import os
import random
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ccvae.errors import UserError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device {name!r}: choose from auto, cpu, cuda")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 dot-product instructions (AVX512-BF16 or AMX), where bf16 pays off.

    On CPUs without them (AVX2 only) PyTorch emulates bf16 and a bf16 matmul is hundreds of times
    slower than float32, so ``auto`` precision stays in float32 there.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` -> bf16 on CUDA (when supported) and on CPUs with native bf16, else fp32."""
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return name


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """bf16 autocast for matmuls and convolutions; losses stay in float32 (see losses.py)."""
    if precision == "bf16":
        # The cast-weight cache cannot live across a CUDA graph capture (its tensors would be freed under the graph).
        capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=not capturing)
    return nullcontext()


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by ``torchrun`` (WORLD_SIZE > 1); pick each rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), resolve_device(device_name)
    import torch.distributed as dist

    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = resolve_device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
        device = torch.device("cuda", info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info, device


def shutdown_distributed() -> None:
    """Leave the process group, if one was joined. Without it a rank can abort at exit (SIGABRT, "terminate called
    without an active exception"): gloo's worker threads outlive the interpreter's teardown (pytorch PR 179291)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
