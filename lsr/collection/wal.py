"""Write-ahead log of a live collection: numbered, checksummed records with group commit.

Records live in one directory as ``{first_seq:020d}.log`` files. A record is the header
``struct.pack("<IIQ", length, crc, seq)`` then ``length`` payload bytes; ``crc`` is ``zlib.crc32``
over the 8 little-endian ``seq`` bytes and the payload. Sequence numbers run 1, 2, 3, ... over the
life of the collection and are never reused, across files, reopenings and truncation.
An append is one ``os.write`` on an ``O_APPEND`` descriptor and is durable once ``sync_through``
has returned for its position; concurrent callers share fsyncs (group commit).
A file is fsync'd before a later file receives data, so on reopen a damaged record in an earlier
file, a damaged record followed by more data, or a gap in the numbering is corruption
(``IndexFormatError``); a damaged record at the end of the last file is a torn write and the file
is truncated to its last good record, with a warning.
"""

from __future__ import annotations

import errno
import os
import re
import struct
import threading
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

from lsr.collection.failpoints import armed, kill_now
from lsr.errors import IndexFormatError

HEADER = struct.Struct("<IIQ")
_SEQ = struct.Struct("<Q")
_NAME = re.compile(r"^(\d{20})\.log$")
MAX_PAYLOAD = 2**32 - 1


def log_name(first_seq: int) -> str:
    """File name of the log file whose first record is ``first_seq``."""
    return f"{first_seq:020d}.log"


def _crc(seq: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(_SEQ.pack(seq)))


def encode_record(seq: int, payload: bytes) -> bytes:
    """One framed record: header then payload."""
    return HEADER.pack(len(payload), _crc(seq, payload), seq) + payload


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _LogFile:
    path: Path
    last_seq: int | None  # None: the file holds no record
    size: int


@dataclass
class _Scan:
    records: list[tuple[int, bytes]]
    good_end: int
    size: int
    torn: str | None  # why the tail after good_end is dropped


def _scan(path: Path, name_seq: int, prev_seq: int | None, last: bool) -> _Scan:
    """Parse one log file; raise IndexFormatError on corruption, report a torn tail."""
    data = path.read_bytes()
    size = len(data)
    records: list[tuple[int, bytes]] = []
    offset = 0
    while offset < size:
        problem, at_tail, seq, payload, end = None, True, 0, b"", size
        if size - offset < HEADER.size:
            problem = f"incomplete header ({size - offset} of {HEADER.size} bytes)"
        else:
            length, crc, seq = HEADER.unpack_from(data, offset)
            end = offset + HEADER.size + length
            if end > size:
                present = size - offset - HEADER.size
                problem = f"incomplete payload ({present} of {length} bytes)"
            else:
                payload = data[offset + HEADER.size : end]
                if _crc(seq, payload) != crc:
                    problem, at_tail = "checksum mismatch", end == size
        if problem is not None:
            if last and (at_tail or data[offset:] == bytes(size - offset)):
                return _Scan(records, offset, size, problem)
            where = "followed by more data" if last else "in a log file that is not the last"
            raise IndexFormatError(
                f"{path}: corrupt write-ahead log record at byte offset {offset} "
                f"({problem}), {where}"
            )
        if not records and seq != name_seq:
            raise IndexFormatError(
                f"{path}: first record has sequence number {seq} but the file name says {name_seq}"
            )
        expected = records[-1][0] + 1 if records else None if prev_seq is None else prev_seq + 1
        if expected is not None and seq != expected:
            raise IndexFormatError(
                f"{path}: write-ahead log record at byte offset {offset} has sequence number "
                f"{seq}, expected {expected}"
            )
        records.append((seq, payload))
        offset = end
    return _Scan(records, offset, size, None)


class WriteAheadLog:
    """An append-only, checksummed log of numbered records; build it with ``open``."""

    def __init__(self, directory: Path, files: list[_LogFile], next_seq: int) -> None:
        self.directory = directory
        self.recovery_notes: list[str] = []
        self.fsyncs = 0
        self.appends = 0
        self._files = files
        self._next_seq = next_seq
        self._lock = threading.Lock()  # appends and file bookkeeping
        self._sync_lock = threading.Lock()  # fsyncs; taken before _lock, never after
        self._fd: int | None = None
        self._current: _LogFile | None = None
        self._position = 0  # bytes appended by this object
        self._synced = 0  # bytes of those known durable
        self._dir_dirty = False
        self._closed = False
        self._failure: OSError | None = None

    @classmethod
    def open(
        cls, directory: Path, *, after_seq: int = 0
    ) -> tuple[WriteAheadLog, list[tuple[int, bytes]]]:
        """Recover the log in ``directory``; return it and its records with seq > ``after_seq``."""
        if after_seq < 0:
            raise ValueError(f"after_seq must be >= 0, got {after_seq}")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        names = sorted(
            (int(m.group(1)), p)
            for p in directory.iterdir()
            if (m := _NAME.match(p.name)) and p.is_file()
        )
        files: list[_LogFile] = []
        replay: list[tuple[int, bytes]] = []
        notes: list[str] = []
        prev_seq: int | None = None
        first_seq: int | None = None
        for i, (name_seq, path) in enumerate(names):
            last = i == len(names) - 1
            scan = _scan(path, name_seq, prev_seq, last)
            if scan.records:
                first_seq = scan.records[0][0] if first_seq is None else first_seq
                prev_seq = scan.records[-1][0]
            replay.extend(r for r in scan.records if r[0] > after_seq)
            files.append(_LogFile(path, prev_seq if scan.records else None, scan.good_end))
            if last:  # make what an earlier process wrote durable before writing more
                fd = os.open(path, os.O_RDWR)
                try:
                    if scan.torn is not None:
                        os.ftruncate(fd, scan.good_end)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            if scan.torn is not None:
                notes.append(
                    f"{path}: torn write at byte offset {scan.good_end} ({scan.torn}); "
                    f"truncated, dropping {scan.size - scan.good_end} bytes"
                )
        if first_seq is not None and first_seq > after_seq + 1:
            raise IndexFormatError(
                f"{directory}: write-ahead log starts at sequence number {first_seq} but "
                f"records after {after_seq} are needed ({after_seq + 1}..{first_seq - 1} missing)"
            )
        if names:
            _fsync_dir(directory)
        wal = cls(directory, files, max(prev_seq or 0, after_seq) + 1)
        wal.recovery_notes = notes
        for note in notes:
            warnings.warn(note, RuntimeWarning, stacklevel=2)
        return wal, replay

    @property
    def last_seq(self) -> int:
        """The highest sequence number assigned or recovered (``after_seq`` if larger)."""
        return self._next_seq - 1

    @property
    def position(self) -> int:
        """The end position of everything appended so far (for :meth:`sync_through`)."""
        with self._lock:
            return self._position

    @property
    def size_bytes(self) -> int:
        """Total bytes of the log files."""
        with self._lock:
            return sum(f.size for f in self._files)

    def _check_usable(self) -> None:
        if self._closed:
            raise ValueError(f"write-ahead log {self.directory} is closed")
        if self._failure is not None:
            raise OSError(
                self._failure.errno,
                f"write-ahead log {self.directory} is unusable after an earlier failure: "
                f"{self._failure}",
            ) from self._failure

    def _start_file(self, seq: int) -> None:
        path = self.directory / log_name(seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if os.fstat(fd).st_size:
            os.close(fd)
            raise IndexFormatError(f"{path}: a new write-ahead log file already holds data")
        info = next((f for f in self._files if f.path == path), None)  # an empty leftover
        if info is None:
            info = _LogFile(path, None, 0)
            self._files.append(info)
        self._fd, self._current, self._dir_dirty = fd, info, True

    def append(self, payload: bytes) -> tuple[int, int]:
        """Write one record (no fsync); return its seq and the position to ``sync_through``."""
        payload = bytes(payload)
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
        with self._lock:
            self._check_usable()
            seq = self._next_seq
            if self._fd is None:
                self._start_file(seq)
            fd, current = self._fd, self._current
            assert fd is not None and current is not None
            frame = memoryview(encode_record(seq, payload))
            if armed("wal.torn_append"):  # crash tests: half a record reaches the file
                os.write(fd, frame[: len(frame) // 2])
                kill_now()
            try:
                written = 0
                while written < len(frame):  # a regular file writes all at once unless full
                    n = os.write(fd, frame[written:])
                    if n <= 0:
                        raise OSError(errno.EIO, f"write to {current.path} wrote nothing")
                    written += n
            except BaseException:
                try:
                    if os.fstat(fd).st_size != current.size:
                        os.ftruncate(fd, current.size)
                except OSError as exc:  # a partial record stays: nothing may follow it
                    self._failure = exc
                raise
            current.size += len(frame)
            current.last_seq = seq
            self._next_seq = seq + 1
            self._position += len(frame)
            self.appends += 1
            return seq, self._position

    def _fsync_current(self, fd: int, dir_dirty: bool) -> None:
        try:
            os.fsync(fd)
            self.fsyncs += 1
            if dir_dirty:
                _fsync_dir(self.directory)
        except OSError as exc:  # after a failed fsync the page cache can no longer be trusted
            self._failure = exc
            raise

    def sync_through(self, position: int) -> None:
        """Return once everything appended up to ``position`` is durable."""
        if self._synced >= position:
            return
        with self._sync_lock:
            if self._synced >= position:  # another caller's fsync covered it
                return
            with self._lock:
                self._check_usable()
                if position > self._position:
                    raise ValueError(f"position {position} is past the end {self._position}")
                target, fd, dir_dirty = self._position, self._fd, self._dir_dirty
            assert fd is not None  # unsynced bytes live in the current file; see rotate
            self._fsync_current(fd, dir_dirty)
            if dir_dirty:
                self._dir_dirty = False
            self._synced = target

    def append_durable(self, payload: bytes) -> int:
        """Append one record and wait until it is durable; return its seq."""
        seq, position = self.append(payload)
        self.sync_through(position)
        return seq

    def rotate(self) -> None:
        """Send later appends to a new file (if the current one holds any record)."""
        with self._sync_lock, self._lock:
            self._check_usable()
            if self._fd is None or self._current is None or self._current.size == 0:
                return
            self._fsync_current(self._fd, self._dir_dirty)
            os.close(self._fd)
            self._fd, self._current, self._dir_dirty = None, None, False
            self._synced = self._position

    def drop_through(self, seq: int) -> int:
        """Delete the files whose records all have seq <= ``seq``; return the bytes freed."""
        with self._lock:
            self._check_usable()
            victims = [
                f
                for f in self._files
                if f is not self._current and (f.last_seq is None or f.last_seq <= seq)
            ]
            for f in victims:
                f.path.unlink(missing_ok=True)
                self._files.remove(f)
        if victims:
            _fsync_dir(self.directory)
        return sum(f.size for f in victims)

    def close(self) -> None:
        """Make appended records durable and release the file."""
        with self._sync_lock, self._lock:
            if self._closed:
                return
            self._closed = True
            fd, self._fd, self._current = self._fd, None, None
            if fd is None:
                return
            try:
                if self._failure is None and self._synced < self._position:
                    self._fsync_current(fd, self._dir_dirty)
                    self._synced = self._position
            finally:
                os.close(fd)

    def __enter__(self) -> WriteAheadLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(
    path: Path, offset: int, next_seq: int
) -> tuple[list[tuple[int, bytes]], int, str | None]:
    """Read-only, for a follower of a live log: the complete records of ``path`` from byte
    ``offset`` on, the first numbered ``next_seq``.

    Returns the records, the offset after the last of them, and why the bytes after it (if any)
    were not read: an incomplete record, or one failing its checksum at the end of the file (or
    followed only by zeros), which a writer may still be appending. A damaged record followed by
    more data, or a gap in the numbering, is an ``IndexFormatError``.
    """
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    size = len(data)
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < size:
        if size - pos < HEADER.size:
            return out, offset + pos, f"incomplete header ({size - pos} of {HEADER.size} bytes)"
        length, crc, seq = HEADER.unpack_from(data, pos)
        end = pos + HEADER.size + length
        if end > size:
            return out, offset + pos, "incomplete payload"
        payload = data[pos + HEADER.size : end]
        if _crc(seq, payload) != crc:
            if end == size or data[pos:] == bytes(size - pos):
                return out, offset + pos, "checksum mismatch at the end of the file"
            raise IndexFormatError(
                f"{path}: corrupt write-ahead log record at byte offset {offset + pos} "
                "(checksum mismatch), followed by more data"
            )
        if seq != next_seq:
            raise IndexFormatError(
                f"{path}: write-ahead log record at byte offset {offset + pos} has sequence "
                f"number {seq}, expected {next_seq}"
            )
        out.append((seq, payload))
        next_seq += 1
        pos = end
    return out, offset + size, None
