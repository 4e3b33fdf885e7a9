"""Model FLOPs per token and the hardware peak, for a model-FLOPs-utilization estimate."""

from __future__ import annotations

import os
import time

import torch

# Dense bf16 tensor-core peaks (no sparsity), from the vendors' data sheets.
GPU_PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "4090": 165e12}


def flops_per_token(model: torch.nn.Module, block_size: int) -> float:
    """Training FLOPs per token: 6 per parameter (forward + backward) plus, for attention
    models, 12 * layers * width * sequence length for the attention scores (PaLM appendix B)."""
    n = sum(p.numel() for p in model.parameters())
    cfg = getattr(model, "config", None)
    attn = 12 * cfg.n_layer * cfg.n_embd * block_size if cfg is not None and hasattr(cfg, "n_layer") and hasattr(cfg, "n_head") else 0
    return 6 * n + attn


_CPU_PEAK: float | None = None


def peak_flops(device: torch.device) -> float | None:
    """Peak FLOP/s: the data-sheet bf16 number for known GPUs; on CPU, a float32 matmul
    measured here once (so CPU "MFU" is relative to what this machine's BLAS reaches)."""
    global _CPU_PEAK
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((v for k, v in GPU_PEAK_BF16.items() if k in name), None)
    if device.type != "cpu":
        return None
    if _CPU_PEAK is None:
        n = 1024
        a = torch.randn(n, n, generator=torch.Generator().manual_seed(0))  # leave the global RNG alone
        a @ a  # warm-up
        best = 0.0
        for _ in range(5):  # best of five: other processes only ever slow a trial down
            t0 = time.perf_counter()
            for _ in range(3):
                a @ a
            best = max(best, 3 * 2 * n**3 / (time.perf_counter() - t0))
        _CPU_PEAK = best
    return _CPU_PEAK


class PeakMemory:
    """Peak memory of a block of work, in bytes above what was in use when it started.

    On CUDA this is ``torch.cuda.max_memory_allocated`` (exact, the tensors alone). On CPU
    there is no allocator counter, so a background thread samples the process's resident set
    size (``/proc/self/statm``) every ``interval`` seconds; it sees what the process really
    holds (tensors, allocator caches, Python objects) and can miss a spike shorter than the
    interval. ``peak_bytes`` is None where neither is available (e.g. macOS CPU).

        with PeakMemory(device) as mem:
            train()
        print(mem.peak_bytes / 2**20, "MiB")
    """

    def __init__(self, device: torch.device | str = "cpu", interval: float = 0.002):
        self.device = torch.device(device)
        self.interval = interval
        self.peak_bytes: int | None = None
        self._base = 0
        self._max = 0
        self._stop = None
        self._thread = None

    @staticmethod
    def rss_bytes() -> int | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._max = max(self._max, self.rss_bytes() or 0)

    def __enter__(self) -> PeakMemory:
        import gc
        import threading

        gc.collect()
        _release_free_memory()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        rss = self.rss_bytes()
        if rss is not None:
            self._base = self._max = rss
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        elif self._thread is not None:
            self._max = max(self._max, self.rss_bytes() or 0)
            self._stop.set()
            self._thread.join()
            self.peak_bytes = self._max - self._base


def _release_free_memory() -> None:
    """Ask glibc to return freed heap pages to the system (``malloc_trim``), so memory freed by
    earlier work does not hide the next measurement's growth; a no-op elsewhere."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass
