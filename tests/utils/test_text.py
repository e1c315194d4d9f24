from ssconv.utils.text import format_count, text_table


def test_format_count():
    assert [format_count(n) for n in (999, 1234, 1_234_567, 2.5e9)] == [
        "999",
        "1.23K",
        "1.23M",
        "2.5G",
    ]


def test_text_table_aligns_rules_and_strips():
    lines = text_table(["name", "n"], [["a", 10], ["long name", 2]], right={1}, footer=["all", 12])
    assert lines == [
        "name        n",
        "---------  --",
        "a          10",
        "long name   2",
        "---------  --",
        "all        12",
    ]
    assert text_table(["x", "y"], [["1", ""]]) == ["x  y", "-  -", "1"]
