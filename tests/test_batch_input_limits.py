"""A batch's input file within its limits: too many lines fails the batch at creation, a line over the
size limit is reported with its number and the others run, and unusable files say what is wrong."""

from __future__ import annotations

import json

import pytest

from gateway.batches.parse import Limits, MalformedLine, ValidLine, parse_input
from gateway.errors import SamoError

ENDPOINT = "/v1/emotions"


def line(custom_id: str, text: str = "I slept well and the morning felt calm.") -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": {"texts": [text]}})


def parse(lines: list[str], limits: Limits = Limits(max_lines=10, max_line_bytes=1000)) -> list:
    return parse_input("\n".join(lines).encode(), ENDPOINT, limits, None)


def test_more_lines_than_the_limit_fail_the_file_naming_the_setting() -> None:
    with pytest.raises(SamoError) as refused:
        parse([line(f"entry-{i}") for i in range(4)], Limits(max_lines=3, max_line_bytes=1000))
    assert "more than 3 lines" in str(refused.value) and "SAMO_BATCH_MAX_LINES" in str(refused.value)
    assert len(parse([line(f"entry-{i}") for i in range(3)], Limits(max_lines=3, max_line_bytes=1000))) == 3


def test_a_line_over_the_size_limit_is_reported_by_number_without_its_text() -> None:
    long_entry = "Today I wrote about everything that happened at work. " * 40
    parsed = parse([line("short"), line("long", long_entry), line("after")])
    assert [type(item) for item in parsed] == [ValidLine, MalformedLine, ValidLine]
    too_large = parsed[1]
    assert isinstance(too_large, MalformedLine)
    assert (too_large.number, too_large.code) == (2, "line_too_large")
    assert "work" not in too_large.message  # no journal text in what the error file says


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"\xff\xfe not text", "not UTF-8"),
        (b"\n\n", "no lines"),
        (b"not json\n{}", "no valid line"),
        ((line("same") + "\n" + line("same")).encode(), "repeats the `custom_id` of line 1"),
    ],
)
def test_unusable_files_fail_at_creation_with_what_is_wrong(data: bytes, says: str) -> None:
    with pytest.raises(SamoError) as refused:
        parse_input(data, ENDPOINT, Limits(max_lines=10, max_line_bytes=1000), None)
    assert says in str(refused.value)
