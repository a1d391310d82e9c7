"""Helpers for Hugging Face transformers shared by the text, classification and LLM parts."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def quiet_transformers():
    """Silence transformers' load reports and progress bars inside the block (e.g. the table
    of freshly initialized weights of a new classification head or of a warm start, which is
    expected); the previous verbosity and progress-bar setting come back afterwards."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
