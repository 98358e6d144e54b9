"""Suite-wide fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sbc.io.logsetup import flush_logs


@pytest.fixture(autouse=True)
def _flush_log_lines() -> Iterator[None]:
    """Log lines are written in batches: write a test's out while its output is captured."""
    yield
    flush_logs()
