"""Generated blocks in Markdown documents: replaced whole, appended, or refused."""

from __future__ import annotations

import pytest

from xenwam.docblock import replace_block
from xenwam.errors import ConfigError

pytestmark = pytest.mark.unit

B, E = "<!-- gen: begin -->", "<!-- gen: end -->"


def test_the_block_is_replaced_and_the_rest_kept() -> None:
    text = f"# Doc\n\nbefore\n{B}\nold\nrows\n{E}\nafter\n"
    new = replace_block(text, B, E, f"{B}\nnew\n{E}")
    assert new == f"# Doc\n\nbefore\n{B}\nnew\n{E}\nafter\n"
    assert replace_block(new, B, E, f"{B}\nnew\n{E}") == new


def test_without_markers_it_is_appended_under_a_heading_or_refused() -> None:
    assert replace_block("# Doc\n\n", B, E, f"{B}\nx\n{E}", heading="## Results") == \
        f"# Doc\n\n## Results\n\n{B}\nx\n{E}\n"
    with pytest.raises(ConfigError, match="gen: begin"):
        replace_block("# Doc\n", B, E, f"{B}\nx\n{E}")


def test_an_end_marker_before_the_begin_marker_does_not_count() -> None:
    with pytest.raises(ConfigError):
        replace_block(f"{E}\n{B}\n", B, E, "x")
