"""Named crash points for crash tests: ``LSR_FAILPOINTS="flush.segment_written:2"`` kills the
process with SIGKILL the 2nd time it passes that point. Unset (always, outside tests), a point
costs one dictionary lookup.

Points: ``wal.torn_append`` (half a record written), ``flush.segment_written``,
``tombstones.written``, ``manifest.before_rename``, ``manifest.after_rename``,
``merge.segment_written``, ``store.before_commit``.
"""

from __future__ import annotations

import os
import signal

_ARMED: dict[str, int] = {}
for _item in filter(None, os.environ.get("LSR_FAILPOINTS", "").split(",")):
    _name, _, _count = _item.partition(":")
    _ARMED[_name.strip()] = int(_count or 1)


def armed(name: str) -> bool:
    """True when this pass of point ``name`` is the one to die at (counts passes)."""
    if name not in _ARMED:
        return False
    _ARMED[name] -= 1
    return _ARMED[name] == 0


def kill_now() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def crash_point(name: str) -> None:
    """Die here (SIGKILL, no clean-up) when the point is armed for this pass."""
    if armed(name):
        os.kill(os.getpid(), signal.SIGKILL)
