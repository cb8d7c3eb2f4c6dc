"""The access-log format: every record survives a round trip; bad files are named precisely."""

from __future__ import annotations

import pytest

from lora_telemetry.capacity.recording import (
    BASE,
    Admission,
    Batch,
    Copy,
    Decoding,
    Load,
    Pool,
    RecordingError,
    Request,
    Unload,
    format_record,
    parse_line,
    read,
)

ODD_NAMES = ["qa", "with space", "colon:7", "100%", "ünïcode-名前", "new\nline", "a/b", BASE]


@pytest.mark.parametrize("record", [
    Pool(1.5, 0, 4, "fifo", 69632),
    Load(2.25, 1, "with space", True),
    Unload(3.0, 0, "colon:7"),
    Batch(4.125, 0, tuple(ODD_NAMES), tuple(range(len(ODD_NAMES)))),
    Request(5.5, "ünïcode-名前", 12, 30),
    Admission(6.0, 1, "100%"),
    Copy(7.0, 0, "a/b", 0.026125, 83886080),
    Decoding(8.0, 1, ("qa", "with space")),
    Decoding(8.5, 0, ()),
])
def test_each_record_round_trips_through_one_line(record):
    line = format_record(record)
    assert "\n" not in line and parse_line(line) == record


def _write(tmp_path, lines: list[str], end: str = "\n"):
    path = tmp_path / "access.log"
    path.write_text("\n".join(lines) + end, encoding="utf-8")
    return path


GOOD = ["# lora-telemetry access log v1", "S 1.000 0 3 lru 100", "B 1.000 0 __base__", "B 1.100 0 qa:2 sql"]


def test_a_corrupt_line_is_named_by_number_and_byte_offset(tmp_path):
    path = _write(tmp_path, [*GOOD, "B 1.2 0 qa:x", "B 1.300 0 qa"])
    with pytest.raises(RecordingError) as error:
        list(read(path))
    offset = sum(len(line) + 1 for line in GOOD)
    assert (error.value.line, error.value.offset) == (5, offset)
    assert f"line 5 (byte offset {offset})" in str(error.value)


def test_partial_keeps_what_came_before_the_damage(tmp_path):
    path = _write(tmp_path, [*GOOD, "B 1.2 0 qa sq"], end="")  # cut off mid-line
    errors: list[RecordingError] = []
    records = list(read(path, partial=True, errors=errors))
    assert [type(r) for r in records] == [Pool, Batch, Batch]
    assert errors[0].line == 5 and "cut off" in str(errors[0])


@pytest.mark.parametrize("line", ["Z 1 2 3", "S 1.0 0 3 mru 100", "L 1.0 0 qa yes", "R 1.0 qa 3", "B 1.0 0 qa:-1",
                                  "C 1.0 0 qa -0.1 100", "C 1.0 0 qa 0.1"])
def test_malformed_records_are_refused(line):
    with pytest.raises(ValueError):
        parse_line(line)


def test_bytes_that_are_not_utf8_are_refused_with_their_line(tmp_path):
    path = tmp_path / "access.log"
    path.write_bytes(b"B 1.000 0 qa\nB 1.100 0 \xff\xfe\n")
    with pytest.raises(RecordingError, match="line 2 .*not UTF-8"):
        list(read(path))


def test_a_pool_with_priorities_keeps_them_through_its_line():
    pool = Pool(1.0, 0, 4, "priority", 1024, {"qa": 5, "odd name=": -2})
    line = format_record(pool)
    assert line == "S 1.000 0 4 priority 1024 odd%20name%3D=-2 qa=5"
    assert parse_line(line) == pool
