"""escape_text: model text made safe for a terminal; escaping twice changes nothing."""
import pytest

from onnxattr.text import escape_text


@pytest.mark.parametrize("raw,shown", [
    ("conv1/Conv", "conv1/Conv"),
    ("Faltung_ä_卷积 1", "Faltung_ä_卷积 1"),
    ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),  # retitles the terminal
    ("\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred"),  # clears the screen, colours
    ("abc\u202edcba", "abc\\u202edcba"),  # right-to-left override reorders what is read
    ("two\nlines\r\tand\x00nul\x7f\x9b", "two\\nlines\\r\\tand\\x00nul\\x7f\\x9b"),
    ("zero\u200bwidth\u2028sep\xa0nbsp", "zero\\u200bwidth\\u2028sep\\xa0nbsp"),
    ("back\\slash", "back\\slash"),
])
def test_escape_text(raw, shown):
    assert escape_text(raw) == shown
    assert escape_text(raw).isprintable()
    assert escape_text(escape_text(raw)) == escape_text(raw)
