"""The write-ahead log: framing, recovery of torn tails, corruption, group commit, crashes."""

from __future__ import annotations

import errno
import hashlib
import inspect
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import pytest

from lsr.collection.wal import HEADER, WriteAheadLog, encode_record, log_name
from lsr.errors import IndexFormatError

REPO = Path(__file__).resolve().parents[1]


def payload_for(seq: int) -> bytes:
    """A payload derived from its seq alone, 0 to 599 bytes (0 bytes for every 17th)."""
    if seq % 17 == 0:
        return b""
    digest = hashlib.sha256(str(seq).encode()).digest()
    return (digest * 20)[: seq * 37 % 600]


def record_size(payload: bytes) -> int:
    return HEADER.size + len(payload)


def open_quietly(directory: Path, **kwargs) -> tuple[WriteAheadLog, list[tuple[int, bytes]]]:
    """Open and fail on any warning: a clean log recovers without one."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return WriteAheadLog.open(directory, **kwargs)


def log_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.log"))


def write_log(directory: Path, payloads: list[bytes], rotate_after: int | None = None) -> None:
    wal, records = open_quietly(directory)
    assert records == []
    for i, payload in enumerate(payloads, 1):
        wal.append(payload)
        if i == rotate_after:
            wal.rotate()
    wal.close()


def test_round_trip_across_rotate(tmp_path: Path) -> None:
    rng = random.Random(0)
    payloads = [rng.randbytes(rng.choice([0, 0, 1, 16, rng.randrange(3000)])) for _ in range(300)]
    assert sum(len(p) == 0 for p in payloads) > 10
    wal, records = open_quietly(tmp_path / "wal")
    assert records == [] and wal.last_seq == 0 and wal.size_bytes == 0
    for seq, payload in enumerate(payloads[:150], 1):
        assert wal.append(payload)[0] == seq
    wal.rotate()
    wal.rotate()  # a no-op: the new file holds nothing yet
    for seq, payload in enumerate(payloads[150:], 151):
        assert wal.append_durable(payload) == seq
    assert wal.last_seq == 300
    assert log_files(tmp_path / "wal") == [log_name(1), log_name(151)]
    expected_size = sum(record_size(p) for p in payloads)
    assert wal.size_bytes == expected_size
    assert sum(p.stat().st_size for p in (tmp_path / "wal").glob("*.log")) == expected_size
    wal.close()
    with pytest.raises(ValueError, match="closed"):
        wal.append(b"late")

    wal, records = open_quietly(tmp_path / "wal")
    assert records == list(enumerate(payloads, 1))
    assert wal.recovery_notes == [] and wal.size_bytes == expected_size
    wal.close()


def test_positions_increase_and_sync_through_validates(tmp_path: Path) -> None:
    wal, _ = open_quietly(tmp_path)
    positions = [wal.append(b"x" * n)[1] for n in (0, 5, 0, 9)]
    assert positions == [16, 37, 53, 78]
    wal.sync_through(positions[1])
    assert wal.fsyncs == 1
    wal.sync_through(positions[0])  # already covered
    assert wal.fsyncs == 1
    with pytest.raises(ValueError, match="past the end"):
        wal.sync_through(positions[-1] + 1)
    wal.close()


def test_reopen_continues_numbering(tmp_path: Path) -> None:
    wal, _ = open_quietly(tmp_path)
    for i in range(5):
        wal.append(payload_for(i + 1))
    wal.close()
    wal, records = open_quietly(tmp_path)
    assert [s for s, _ in records] == [1, 2, 3, 4, 5] and wal.last_seq == 5
    assert wal.append(b"six")[0] == 6
    wal.close()
    assert log_files(tmp_path) == [log_name(1), log_name(6)]  # each opening starts a file
    wal, records = open_quietly(tmp_path, after_seq=5)
    assert records == [(6, b"six")]
    wal.close()

    # A collection whose log was wholly dropped still numbers on from its checkpoint.
    wal, records = open_quietly(tmp_path / "fresh", after_seq=41)
    assert records == [] and wal.last_seq == 41
    assert wal.append_durable(b"x") == 42
    wal.close()
    assert log_files(tmp_path / "fresh") == [log_name(42)]


def test_after_seq_filters_records(tmp_path: Path) -> None:
    payloads = [payload_for(s) for s in range(1, 31)]
    write_log(tmp_path, payloads, rotate_after=10)
    for after in (0, 5, 10, 11, 29, 30, 35):
        wal, records = open_quietly(tmp_path, after_seq=after)
        assert records == [(s, payloads[s - 1]) for s in range(after + 1, 31)]
        assert wal.last_seq == max(30, after)
        assert wal.append(b"next")[0] == max(30, after) + 1
        wal.close()
        for name in log_files(tmp_path):  # drop what this pass added; keep the 30 records
            if int(name[:-4]) > 30:
                (tmp_path / name).unlink()


def test_log_starting_after_the_checkpoint_is_missing_records(tmp_path: Path) -> None:
    write_log(tmp_path, [payload_for(s) for s in range(1, 21)], rotate_after=10)
    (tmp_path / log_name(1)).unlink()
    with pytest.raises(IndexFormatError, match=r"6\.\.10 missing"):
        WriteAheadLog.open(tmp_path, after_seq=5)
    wal, records = open_quietly(tmp_path, after_seq=10)
    assert [s for s, _ in records] == list(range(11, 21))
    wal.close()


def test_torn_tail_at_every_byte_offset(tmp_path: Path) -> None:
    source = tmp_path / "source"
    payloads = [payload_for(s) for s in (1, 2, 3, 4)] + [b"the last record, torn" * 2]
    write_log(source, payloads, rotate_after=2)
    last_file = log_name(3)
    full = (source / last_file).read_bytes()
    previous_end = len(full) - record_size(payloads[-1])
    expected = list(enumerate(payloads[:4], 1))

    for cut in range(previous_end, len(full)):
        directory = tmp_path / f"cut{cut}"
        directory.mkdir()
        (directory / log_name(1)).write_bytes((source / log_name(1)).read_bytes())
        (directory / last_file).write_bytes(full[:cut])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            wal, records = WriteAheadLog.open(directory)
        assert records == expected
        assert (directory / last_file).stat().st_size == previous_end
        if cut == previous_end:  # nothing torn: a clean log
            assert caught == [] and wal.recovery_notes == []
        else:
            assert len(caught) == 1 and issubclass(caught[0].category, RuntimeWarning)
            assert wal.recovery_notes == [str(caught[0].message)]
            note = wal.recovery_notes[0]
            assert last_file in note and f"byte offset {previous_end}" in note
            assert f"dropping {cut - previous_end} bytes" in note
        assert wal.append_durable(b"after recovery") == 5
        wal.close()
        wal, records = open_quietly(directory)
        assert records == [*expected, (5, b"after recovery")]
        wal.close()


@pytest.mark.parametrize("where", ["payload", "crc", "seq"])
def test_damaged_last_record_is_torn(tmp_path: Path, where: str) -> None:
    payloads = [payload_for(s) for s in (1, 2, 3)] + [b"damaged"]
    write_log(tmp_path, payloads)
    path = tmp_path / log_name(1)
    data = bytearray(path.read_bytes())
    start = len(data) - record_size(payloads[-1])
    data[{"payload": len(data) - 3, "crc": start + 5, "seq": start + 8}[where]] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match=f"byte offset {start} .checksum mismatch"):
        wal, records = WriteAheadLog.open(tmp_path)
    assert records == list(enumerate(payloads[:3], 1))
    assert path.stat().st_size == start
    assert wal.append(b"again")[0] == 4
    wal.close()


def test_zero_filled_tail_is_torn(tmp_path: Path) -> None:
    payloads = [payload_for(s) for s in (1, 2, 3)]
    write_log(tmp_path, payloads)
    path = tmp_path / log_name(1)
    good = path.stat().st_size
    with path.open("ab") as f:
        f.write(bytes(100))  # a crash can leave a file extended with zeros
    with pytest.warns(RuntimeWarning, match="dropping 100 bytes"):
        wal, records = WriteAheadLog.open(tmp_path)
    assert records == list(enumerate(payloads, 1)) and path.stat().st_size == good
    wal.close()


def test_damaged_middle_record_is_corruption(tmp_path: Path) -> None:
    payloads = [b"first record", b"second record", b"third record", b"fourth"]
    write_log(tmp_path, payloads)
    path = tmp_path / log_name(1)
    data = bytearray(path.read_bytes())
    offset = record_size(payloads[0])
    data[offset + HEADER.size + 3] ^= 0x01  # in the second record's payload
    path.write_bytes(bytes(data))
    size = path.stat().st_size
    with pytest.raises(IndexFormatError, match=f"{log_name(1)}.*byte offset {offset}.*checksum"):
        WriteAheadLog.open(tmp_path)
    assert path.stat().st_size == size  # corruption is reported, never truncated away


def test_torn_tail_of_an_earlier_file_is_corruption(tmp_path: Path) -> None:
    payloads = [payload_for(s) for s in range(1, 7)]
    write_log(tmp_path, payloads, rotate_after=3)
    first = tmp_path / log_name(1)
    first.write_bytes(first.read_bytes()[:-1])
    with pytest.raises(IndexFormatError, match="not the last"):
        WriteAheadLog.open(tmp_path)


def test_sequence_gaps_are_corruption(tmp_path: Path) -> None:
    (tmp_path / "gap").mkdir()
    (tmp_path / "gap" / log_name(1)).write_bytes(encode_record(1, b"a") + encode_record(3, b"c"))
    with pytest.raises(IndexFormatError, match="sequence number 3, expected 2"):
        WriteAheadLog.open(tmp_path / "gap")

    (tmp_path / "files").mkdir()
    (tmp_path / "files" / log_name(1)).write_bytes(encode_record(1, b"a"))
    (tmp_path / "files" / log_name(3)).write_bytes(encode_record(3, b"c"))
    with pytest.raises(IndexFormatError, match="expected 2"):
        WriteAheadLog.open(tmp_path / "files")

    (tmp_path / "name").mkdir()
    (tmp_path / "name" / log_name(5)).write_bytes(encode_record(4, b"d"))
    with pytest.raises(IndexFormatError, match="file name says 5"):
        WriteAheadLog.open(tmp_path / "name")


def test_drop_through_deletes_only_covered_files(tmp_path: Path) -> None:
    wal, _ = open_quietly(tmp_path)
    sizes = []
    for first, last in ((1, 10), (11, 20), (21, 25)):
        for seq in range(first, last + 1):
            wal.append(payload_for(seq))
        sizes.append(sum(record_size(payload_for(s)) for s in range(first, last + 1)))
        if last < 25:
            wal.rotate()
    assert wal.size_bytes == sum(sizes)
    assert wal.drop_through(9) == 0
    assert wal.drop_through(15) == sizes[0]
    assert log_files(tmp_path) == [log_name(11), log_name(21)]
    assert wal.drop_through(20) == sizes[1]
    assert wal.drop_through(100) == 0  # the file being appended to stays
    assert log_files(tmp_path) == [log_name(21)] and wal.size_bytes == sizes[2]
    wal.rotate()
    assert wal.drop_through(25) == sizes[2]
    assert log_files(tmp_path) == [] and wal.size_bytes == 0
    assert wal.append_durable(b"on") == 26
    wal.close()
    wal, records = open_quietly(tmp_path, after_seq=25)
    assert records == [(26, b"on")]
    wal.close()


def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    wal, _ = open_quietly(tmp_path)
    acked: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            for i in range(50):
                payload = f"writer {t} record {i}".encode()
                acked[wal.append_durable(payload)] = payload
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(acked) == list(range(1, 401))
    assert wal.appends == 400 and wal.fsyncs < wal.appends
    wal.close()
    wal, records = open_quietly(tmp_path)
    assert records == sorted(acked.items())
    wal.close()


def test_one_fsync_covers_every_append_before_it(tmp_path: Path) -> None:
    wal, _ = open_quietly(tmp_path)
    rounds, barrier = 20, threading.Barrier(8, timeout=60)

    def writer() -> None:
        for _ in range(rounds):
            _, position = wal.append(b"r")
            barrier.wait()  # all 8 appends of this round precede any sync of it
            wal.sync_through(position)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wal.appends == 8 * rounds and wal.fsyncs == rounds
    wal.close()


def test_concurrent_appends_and_rotations(tmp_path: Path) -> None:
    wal, _ = open_quietly(tmp_path)
    acked: dict[int, bytes] = {}

    def writer(t: int) -> None:
        for i in range(100):
            payload = f"{t}:{i}".encode() * (i % 4)
            acked[wal.append_durable(payload)] = payload

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        wal.rotate()
        time.sleep(0.001)
    for thread in threads:
        thread.join()
    wal.close()
    wal, records = open_quietly(tmp_path)
    assert records == sorted(acked.items()) and [s for s, _ in records] == list(range(1, 401))
    assert len(log_files(tmp_path)) >= 2
    wal.close()


def test_failed_write_leaves_no_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wal, _ = open_quietly(tmp_path)
    wal.append_durable(b"kept")
    path = tmp_path / log_name(1)
    size = path.stat().st_size
    real_write = os.write

    for partial in (0, 7):

        def full_disk(fd: int, data: bytes, partial: int = partial) -> int:
            if partial:
                real_write(fd, bytes(data)[:partial])
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "write", full_disk)
        with pytest.raises(OSError) as info:
            wal.append(b"lost for want of space")
        monkeypatch.setattr(os, "write", real_write)
        assert info.value.errno == errno.ENOSPC
        assert path.stat().st_size == size and wal.last_seq == 1 and wal.size_bytes == size
    assert wal.append_durable(b"after") == 2
    wal.close()
    wal, records = open_quietly(tmp_path)
    assert records == [(1, b"kept"), (2, b"after")]
    wal.close()


def test_failed_fsync_makes_the_log_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal, _ = open_quietly(tmp_path)

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output"):
        wal.append_durable(b"unsure")
    monkeypatch.undo()
    with pytest.raises(OSError, match="unusable"):
        wal.append(b"more")
    wal.close()
    wal, records = open_quietly(tmp_path)
    assert records == [(1, b"unsure")]  # written, never acknowledged: replay may include it
    wal.close()


CHILD = (
    "import hashlib, sys\n"
    "from pathlib import Path\n"
    "from lsr.collection.wal import WriteAheadLog\n"
    + inspect.getsource(payload_for)
    + textwrap.dedent(
        """
        wal, _ = WriteAheadLog.open(Path(sys.argv[1]))
        print("ready", flush=True)
        while True:
            seq = wal.append_durable(payload_for(wal.last_seq + 1))
            print(seq, flush=True)
        """
    )
)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_killed_writer_loses_no_acknowledged_record(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    acked: list[int] = []
    for _ in range(2):  # the second writer recovers the first one's log, then is killed too
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
            acked.append(int(child.stdout.readline()))
            time.sleep(rng.uniform(0.01, 0.25))
        finally:
            child.send_signal(signal.SIGKILL)
            out, _ = child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL
        acked += [int(line) for line in out.split()]

    assert acked == sorted(acked) and len(acked) == len(set(acked))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a process killed mid-write may leave a torn tail
        wal, records = WriteAheadLog.open(tmp_path)
    seqs = [s for s, _ in records]
    assert seqs == list(range(1, len(seqs) + 1))
    assert set(acked) <= set(seqs)
    assert len(seqs) - max(acked) <= 1  # at most the record in flight was never acknowledged
    assert all(payload == payload_for(seq) for seq, payload in records)
    assert wal.append_durable(b"after the crashes") == len(seqs) + 1
    wal.close()
