"""Text PostgreSQL cannot store: NUL (U+0000) is refused in `text` and `jsonb` alike, so it
is refused on the way in, with the field that holds it, instead of failing in the database."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, model_validator

NUL = "\x00"


def nul_path(value: Any) -> str | None:
    """Where a NUL is in a JSON-like value: "" for the value itself, `a.b[2]` within it
    (a key holding NUL names itself with `?` in its place); None if there is none."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:  # iterative: a hostile document may nest deeper than Python recurses
        path, item = stack.pop()
        if isinstance(item, str):
            if NUL in item:
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                name = str(key).replace(NUL, "?")
                child_path = f"{path}.{name}" if path else name
                if isinstance(key, str) and NUL in key:
                    return child_path
                stack.append((child_path, child))
        elif isinstance(item, list | tuple):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(item))
    return None


class RefusesNul(BaseModel):
    """A model whose input, at any depth, holds no NUL."""

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        path = nul_path(data)
        if path is not None:
            raise ValueError(f"{path or 'the text'} cannot contain NUL (U+0000)")
        return data
