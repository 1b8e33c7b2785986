"""Lines the CLIs print: a styled label, then user text exactly as it is. Rich markup would
read `[a-z0-9_]` in a pattern, or a bracket in a path or a KPI description, as a tag and
drop it, so user text never goes through markup."""

from __future__ import annotations

from rich.text import Text


def labelled(label: str, style: str, text: str) -> Text:
    return Text.assemble((label, style), " ", text)
