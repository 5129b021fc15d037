import pytest

from budgetplan.units import format_bytes, parse_bytes, parse_rate, parse_seconds


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("320KB", 320 * 1024),
        ("320 kb", 320 * 1024),
        ("1MB", 1024**2),
        ("0.5 MiB", 512 * 1024),
        ("2GB", 2 * 1024**3),
        ("1536", 1536),
        (4096, 4096),
        ("1.5K", 1536),
        ("0.3KB", 308),  # rounded up to whole bytes
    ],
)
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["-3KB", "12 parsecs", "KB", "", "1e999KB", True, None, [1]])
def test_parse_bytes_rejects(bad):
    with pytest.raises(ValueError):
        parse_bytes(bad)


def test_rates_and_durations():
    assert parse_rate("216MHz") == 216e6
    assert parse_rate("108M", "mac/s") == 108e6
    assert parse_rate("1.5e9") == 1.5e9
    assert parse_seconds("500ms") == pytest.approx(0.5)
    assert parse_seconds(2) == 2.0
    with pytest.raises(ValueError):
        parse_rate("fast")


def test_format_bytes_round_trips_through_parse():
    for n in (0, 812, 1024, 262144, 3 * 1024**2 + 1, 5 * 1024**3):
        text = format_bytes(n)
        assert abs(parse_bytes(text.replace(" ", "")) - n) <= max(1, n * 0.001)
