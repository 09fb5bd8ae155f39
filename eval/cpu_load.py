"""A competing CPU load for latency benchmarks: another process spinning on one core.

Bounded: the spinner stops by itself after ``seconds`` and is killed when the block ends.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

_SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


@contextlib.contextmanager
def competing_load(seconds: float = 600.0) -> Iterator[None]:
    """Run the block while a separate Python process keeps one core busy."""
    spinner = subprocess.Popen([sys.executable, "-c", _SPIN.format(seconds=seconds)])
    time.sleep(0.5)  # let it reach the scheduler before timing starts
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()
