"""Hardware and software fingerprint of the machine a run trains on (design.md §5, tags).

Nothing here imports a deep-learning framework: `mltrack --help` must stay fast. Framework
facts (CUDA/cuDNN builds) are read only from frameworks the caller has already imported.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

FRAMEWORKS = (
    "mltrack",
    "mlflow",
    "optuna",
    "tensorflow",
    "keras",
    "torch",
    "torchvision",
    "transformers",
    "numpy",
)


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_mb: int
    compute_capability: tuple[int, int]


@dataclass(frozen=True)
class Hardware:
    cpu_model: str
    cpu_cores: int
    avx512_bf16: bool
    amx_bf16: bool
    gpus: tuple[Gpu, ...] = field(default_factory=tuple)
    gpu_driver: str = ""

    @property
    def label(self) -> str:
        """A short human name for leaderboards: the accelerator if any, else the CPU."""
        if self.gpus:
            return f"{self.gpus[0].name} x{len(self.gpus)}"
        return f"{self.cpu_model} ({self.cpu_cores} cores)"

    @property
    def fingerprint(self) -> str:
        """A stable id: same hardware, same id; used to group runs by machine type."""
        parts = [self.cpu_model, str(self.cpu_cores), str(self.avx512_bf16), str(self.amx_bf16)]
        parts += [f"{g.name}/{g.memory_mb}" for g in self.gpus]
        return hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]


def _cpu_info() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set[str]()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break
    return model, flags


def cpu_flags() -> set[str]:
    """The CPU's instruction-set flags (``/proc/cpuinfo``; empty where it cannot be read)."""
    return _cpu_info()[1]


def _gpus() -> tuple[tuple[Gpu, ...], str]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no NVIDIA driver: a CPU machine, not an error
        return (), ""
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append(Gpu(str(name), int(memory), (int(major), int(minor))))
        return tuple(gpus), str(pynvml.nvmlSystemGetDriverVersion())
    finally:
        pynvml.nvmlShutdown()


def gpu_energy_mj() -> float | None:
    """The GPUs' energy counters summed (mJ since their driver loaded), or None: no NVML, no
    GPU, or a GPU without the counter (it needs Volta or newer)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        total = sum(float(pynvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in handles)
        return total if handles else None
    except Exception:  # NVMLError_NotSupported on older GPUs
        return None
    finally:
        pynvml.nvmlShutdown()


@functools.cache
def detect_hardware() -> Hardware:
    model, flags = _cpu_info()
    gpus, driver = _gpus()
    return Hardware(
        cpu_model=model,
        cpu_cores=os.cpu_count() or 1,
        avx512_bf16="avx512_bf16" in flags,
        amx_bf16="amx_bf16" in flags,
        gpus=gpus,
        gpu_driver=driver,
    )


def hardware_tags(hw: Hardware) -> dict[str, str]:
    tags = {
        "hw.label": hw.label,
        "hw.fingerprint": hw.fingerprint,
        "hw.cpu_model": hw.cpu_model,
        "hw.cpu_cores": str(hw.cpu_cores),
        "hw.avx512_bf16": str(hw.avx512_bf16).lower(),
        "hw.amx_bf16": str(hw.amx_bf16).lower(),
        "hw.gpu_count": str(len(hw.gpus)),
    }
    if hw.gpus:
        tags["hw.gpu_model"] = hw.gpus[0].name
        tags["hw.gpu_memory_mb"] = str(hw.gpus[0].memory_mb)
        cc = hw.gpus[0].compute_capability
        tags["hw.gpu_compute_capability"] = f"{cc[0]}.{cc[1]}"
        tags["hw.gpu_driver"] = hw.gpu_driver
    return tags


def software_tags() -> dict[str, str]:
    tags = {"sw.python": platform.python_version(), "sw.os": platform.platform()}
    for name in FRAMEWORKS:
        try:
            tags[f"sw.{name}"] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    # CUDA/cuDNN as built into frameworks that are already loaded (never import one here).
    torch = sys.modules.get("torch")
    if torch is not None and getattr(torch.version, "cuda", None):
        tags["sw.torch_cuda"] = str(torch.version.cuda)
        if torch.backends.cudnn.is_available():
            tags["sw.torch_cudnn"] = str(torch.backends.cudnn.version())
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        info = tf.sysconfig.get_build_info()
        for key in ("cuda_version", "cudnn_version"):
            if info.get(key):
                tags[f"sw.tensorflow_{key}"] = str(info[key])
    return tags


def git_tags(path: Path | None = None) -> dict[str, str]:
    """Commit and dirty flag of the code that ran, when it runs from a git checkout."""
    cwd = str(path or Path.cwd())

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"mlflow.source.git.commit": commit, "git.dirty": str(dirty).lower()}
