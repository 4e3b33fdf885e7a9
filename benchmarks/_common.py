"""The machine header every benchmark prints and stores with its results."""

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
