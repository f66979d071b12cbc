import pytest

from sddkd.scales import format_scales, num_regions, parse_scales


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1", (1,)),
        ("1,2,4", (1, 2, 4)),
        ("[1, 2, 4]", (1, 2, 4)),
        (" 1 , 4 ", (1, 4)),
        ("(1,2)", (1, 2)),
        ("1 2 4", (1, 2, 4)),
        (1, (1,)),
        ((1, 2, 4), (1, 2, 4)),
        ([1, 2], (1, 2)),
    ],
)
def test_parse_scales_accepts(text, expected):
    assert parse_scales(text) == expected


@pytest.mark.parametrize("bad", ["2,4", "1,1", "0", "x", "", "1,2,2", "1,4,2", "-1", "1.5", "[]", (2,), (1, True)])
def test_parse_scales_rejects_with_rule(bad):
    with pytest.raises(ValueError, match="M must be distinct positive integers"):
        parse_scales(bad)


def test_num_regions_and_format():
    assert [num_regions(s) for s in [(1,), (1, 2), (1, 4), (1, 2, 4)]] == [1, 5, 17, 21]
    assert format_scales((1, 2, 4)) == "1-2-4"
