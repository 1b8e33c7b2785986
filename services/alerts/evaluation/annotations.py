"""Annotation templates of rules (`{{ value }}`, `{{ labels.source }}`), rendered in a
sandbox: a user's template can read its context and nothing else."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

_templates = SandboxedEnvironment(autoescape=False, undefined=jinja2.ChainableUndefined)


@lru_cache(maxsize=4096)
def _template(source: str) -> jinja2.Template:
    return _templates.from_string(source)


def render(source: str, context: Mapping[str, Any]) -> str:
    """The rendered template; a broken one shows as is, with the error."""
    if "{" not in source:
        return source
    try:
        return _template(source).render(**context)
    except jinja2.TemplateError as exc:
        return f"{source} (template error: {exc})"
