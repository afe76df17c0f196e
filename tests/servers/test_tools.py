"""The tool list itself: every name a configuration may allow is one tool function."""

from __future__ import annotations

from servers.settings import TOOL_NAMES
from servers.tools import TOOLS


def test_every_tool_name_a_configuration_may_allow_names_one_tool() -> None:
    names = [tool.__name__ for tool in TOOLS]
    assert sorted(names) == sorted(TOOL_NAMES)
    assert len(set(names)) == len(names)
