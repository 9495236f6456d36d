"""The machine: host and device memory, the record of hardware, libraries and settings a result needs.

Host memory is read from ``/proc/self/status`` (Linux) without psutil. The peak resident set size
(``VmHWM``) can be reset to the current one by writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0),
which gives the peak of one measurement; elsewhere the peak is ``resource.getrusage``'s, the peak of the
whole process so far, and a delta over it only shows growth beyond every earlier peak.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import resource
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = ("numpy", "numba", "jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "torch", "triton",
             "optax", "array-api-compat", "pandas", "matplotlib")
FLAGS = ("XLA_FLAGS", "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION", "JAX_PLATFORMS",
         "CUDA_VISIBLE_DEVICES", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "TFMM_NUMBA_CACHE")
OOM_MARKERS = ("out of memory", "resource_exhausted", "resource exhausted", "cannot allocate memory",
               "failed to allocate", "outofmemoryerror")


# ------------------------------------------------------------------------------------------- host memory

def _status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``), or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_bytes() -> int | None:
    """Resident set size of this process now, bytes (None where unknown)."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def peak_rss_bytes() -> int:
    """Peak resident set size, bytes: since the last :func:`reset_peak_rss` where it worked, else of the
    whole process."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def reset_peak_rss() -> bool:
    """Reset the peak resident set size to the current one; False where the system does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def available_host_bytes() -> int | None:
    """Memory available to new allocations (``MemAvailable``), bytes, or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def total_host_bytes() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` reports an exhausted host or device memory (torch, XLA, numpy)."""
    if isinstance(exc, MemoryError):
        return True
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(marker in text for marker in OOM_MARKERS)


# ---------------------------------------------------------------------------------------- device memory

def torch_cuda_available() -> bool:
    if "torch" not in sys.modules and _missing("torch"):
        return False
    import torch

    return bool(torch.cuda.is_available())


def jax_gpu_device() -> Any:
    """JAX's first GPU device, or None (load the tfmm JAX backend first: it sets XLA flags at import)."""
    if _missing("jax"):
        return None
    import jax

    for platform_name in ("gpu", "cuda"):
        try:
            devices = jax.devices(platform_name)
        except (RuntimeError, ValueError):
            continue
        if devices:
            return devices[0]
    return None


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


def jax_memory_stats(device: Any) -> dict[str, int]:
    """``device.memory_stats()`` of a JAX device ({} on the CPU, which keeps none)."""
    try:
        return dict(device.memory_stats() or {})
    except Exception:  # not every platform implements it
        return {}


# ------------------------------------------------------------------------------------------ environment

def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def nvidia_smi() -> dict[str, str] | None:
    """Name, driver and memory of the first GPU from ``nvidia-smi`` (None without one)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
    parts = [p.strip() for p in first.split(",")]
    return dict(zip(("name", "driver", "memory"), parts)) if len(parts) == 3 else None


def device_model(device: str) -> str:
    """The device the arrays live on: the GPU's name for cuda, the processor's for cpu."""
    if device == "cuda":
        smi = nvidia_smi()
        if smi:
            return smi["name"]
        if torch_cuda_available():
            import torch

            return torch.cuda.get_device_name(0)
        gpu = jax_gpu_device()
        if gpu is not None:
            return str(gpu.device_kind)
        return "unknown GPU"
    return cpu_model()


def device_slug(device: str, model: str) -> str:
    """A file name for results: "nvidia-h200", "cpu-amd-epyc"."""
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-") or "unknown"
    return slug if device == "cuda" else f"cpu-{slug}"


def git_commit() -> dict[str, Any]:
    """Commit and dirtiness of the source checkout tfmm is imported from; ``TFMM_GIT_COMMIT`` where the
    copy has no git metadata."""
    import tfmm

    root = Path(tfmm.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=20, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=20, check=True).stdout
        return {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": os.environ.get("TFMM_GIT_COMMIT"), "dirty": None}


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("tfmm", *LIBRARIES):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def runtime_flags() -> dict[str, Any]:
    """Environment flags that change speed, and the frameworks' own settings once loaded."""
    flags: dict[str, Any] = {name: os.environ.get(name) for name in FLAGS if name in os.environ}
    if "torch" in sys.modules:
        import torch

        flags["torch_num_threads"] = torch.get_num_threads()
        flags["torch_cuda"] = torch.version.cuda
    if "jax" in sys.modules:
        import jax

        flags["jax_enable_x64"] = bool(jax.config.jax_enable_x64)
        flags["jax_default_backend"] = jax.default_backend()
    if "numba" in sys.modules:
        import numba

        flags["numba_num_threads"] = numba.config.NUMBA_NUM_THREADS
    return flags


def environment(device: str) -> dict[str, Any]:
    """The record of where and with what a benchmark ran."""
    smi = nvidia_smi() if device == "cuda" else None
    return {
        "device": device,
        "device_model": device_model(device),
        "driver": smi["driver"] if smi else None,
        "device_memory": smi["memory"] if smi else None,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "host_memory_bytes": total_host_bytes(),
        "platform": platform.platform(),
        "libraries": library_versions(),
        "flags": runtime_flags(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_commit(),
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


__all__ = ["current_rss_bytes", "peak_rss_bytes", "reset_peak_rss", "available_host_bytes", "is_out_of_memory",
           "torch_cuda_available", "jax_gpu_device", "jax_memory_stats", "environment", "device_model",
           "device_slug", "runtime_flags"]
