"""Fixtures of the keyword-spotting tests: ``tone_data`` is in tests/conftest.py, shared with
the command-line tests; ``one_thread`` pins torch to one thread for a module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Small models at small batches: a second torch thread only waits on a busy core (slow
    on a shared machine). Modules use it with ``pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
