"""Device and precision choice, seeding and distributed setup: the only place that looks at hardware."""

from __future__ import annotations

import functools
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


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first CPU's fields in /proc/cpuinfo (model name, cpu family, model, flags...); empty where absent."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _cpu_flags() -> set[str]:
    return set(_cpuinfo().get("flags", "").split())


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 dot-product instructions (AVX512-BF16 or AMX), where bf16 pays off.

    On CPUs without them (AVX2 only) PyTorch emulates bf16 and a bf16 matmul is hundreds of times
    slower than float32, so ``auto`` precision stays in float32 there.
    """
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_has_amx() -> bool:
    """True on CPUs with AMX (Intel Sapphire Rapids and later): there NHWC paid under bf16 too (resolve_memory_format)."""
    return "amx_bf16" in _cpu_flags()


def cpu_summary() -> str:
    """The CPU as benchmarks name it: model name, family/model and its bf16 instructions (from /proc/cpuinfo).

    Cloud CPUs often report a bare "AMD EPYC"; the family and model tell a Zen 4 (25/17) from a Zen 5 (26/...).
    """
    fields = _cpuinfo()
    if not fields:
        return "unknown CPU"
    flags = _cpu_flags()
    bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f in flags] or ["no native bf16"]
    return (f"{fields.get('model name', 'unknown CPU')} (family {fields.get('cpu family', '?')}, "
            f"model {fields.get('model', '?')}; {', '.join(bf16)}), {os.cpu_count()} cores")


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` -> bf16 on CUDA (when supported) and on CPUs with native bf16, else fp32."""
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return name


def has_instance_norm(module: torch.nn.Module) -> bool:
    """True where ``module`` holds instance norm (``GroupNorm``, model._norm), whose NHWC kernels are slow."""
    return any(isinstance(m, torch.nn.GroupNorm) for m in module.modules())


def resolve_memory_format(name: str, device: torch.device, precision: str, has_instance_norm: bool) -> str:
    """``auto`` -> the layout measured faster for this step (benchmarks/memory_format.py, 2-core CPUs):

    - contiguous with instance norm (GroupNorm): its NHWC kernels made a step 1.3-2.4x slower (Zen 4);
    - contiguous under bf16 on a CPU without AMX: NHWC 3-8 % slower (Zen 4 with AVX512-BF16);
    - channels_last otherwise on a CPU: fp32 7-13 % faster (Zen 4, AMX Xeon), bf16 with AMX 9-17 % faster;
    - contiguous on CUDA, where it has not been measured.
    """
    if name != "auto":
        return name
    if device.type != "cpu" or has_instance_norm or (precision == "bf16" and not cpu_has_amx()):
        return "contiguous"
    return "channels_last"


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
