"""Quiet Hugging Face libraries: transformers' and datasets' progress bars, load reports and
their own deprecation warnings off for a block, their settings restored after. Used wherever
llmkit calls into them and logs what matters itself."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

__all__ = ["quiet_hf"]


@contextlib.contextmanager
def quiet_hf() -> Iterator[None]:
    """Silence transformers' and datasets' progress bars and load reports for the block,
    restoring their settings after."""
    import datasets
    from transformers.utils import logging as tlog

    t_level, d_level = tlog.get_verbosity(), datasets.logging.get_verbosity()
    t_bars, d_bars = tlog.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    datasets.logging.set_verbosity_error()
    tlog.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)  # deprecations inside peft/transformers, not the user's doing
            yield
    finally:
        tlog.set_verbosity(t_level)
        datasets.logging.set_verbosity(d_level)
        if t_bars:
            tlog.enable_progress_bar()
        if d_bars:
            datasets.enable_progress_bars()
