"""What every benchmark shares: the machine header, goal verdicts and the text table."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform


def machine_info(dists: tuple[str, ...] = ("llmkit",), **extra) -> dict:
    """CPU model, cores, Python, platform, the versions of ``dists``, the load average now,
    and any ``extra`` fields."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for dist in dists:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "loadavg_start": list(os.getloadavg()),
        **extra,
    }


NOISE = 0.10  # a miss by less than this fraction is reported as within noise


def verdict(value: float, goal: float, higher_is_better: bool = True) -> str:
    """``meets``, ``within noise`` (a miss by under NOISE) or ``MISS``."""
    if (value >= goal) if higher_is_better else (value <= goal):
        return "meets"
    near = value >= goal * (1 - NOISE) if higher_is_better else value <= goal * (1 + NOISE)
    return "within noise" if near else "MISS"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """A plain aligned table: first column left, the rest right."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    print(fmt.format(*headers))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(fmt.format(*r))


def write_results(path, results: dict) -> None:
    """Write a benchmark's results as indented JSON, atomically, and say where."""
    import json

    from llmkit._io import atomic_write_text

    atomic_write_text(path, json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")
