"""Rendering: pure functions from a plan to configuration text (Jinja2, StrictUndefined)."""

from __future__ import annotations

from typing import Any

import jinja2

from hapair.errors import OperationError

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("hapair.render", "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)


def render_template(name: str, **context: Any) -> str:
    """Render one template; template errors become ``OperationError`` naming template and line."""
    try:
        return _ENV.get_template(name).render(**context)
    except jinja2.TemplateError as exc:
        line = getattr(exc, "lineno", None)
        raise OperationError(f"template {name} line {line}: {exc}") from exc
