"""The settings reference (docs/configuration.md), generated from :class:`notestream.core.settings.Settings`.

One table, one row per field, in the model's order: so the documentation cannot drift from the code
(a test compares the committed file with :func:`render_docs`). ``notestream config docs`` rewrites it.

>>> type_name(int | None)
'int \\\\| None'
>>> "| `broker` | `NOTESTREAM_BROKER` |" in render_docs()
True
"""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from notestream.core.settings import CONFIG_ENV, Settings

DOCS_PATH = Path("docs/configuration.md")

_HEADER = f"""# Configuration reference

<!-- Generated from notestream/settings.py by `notestream config docs`; do not edit by hand. -->

Every notestream process (worker, replay, alerts, demo, score) reads one frozen settings object.
Each setting below can be given

- in the environment as `NOTESTREAM_<NAME>` (lists as JSON, e.g. `NOTESTREAM_DEVICES='["cuda:0"]'`),
- in a TOML file named by `{CONFIG_ENV}=/path/file.toml` or `--config /path/file.toml`, with the
  setting names as top-level keys (see `deploy/notestream.example.toml`),
- or as a command-line option where a command offers one.

Precedence, highest first: command-line options, environment, TOML file, defaults.
`notestream config show` prints the effective settings with every secret masked; secrets are never
printed or logged (a password inside a URL is masked too, but prefer the `*_password` settings).

| setting | environment variable | type | default | description |
|---|---|---|---|---|
"""


def type_name(annotation: Any) -> str:
    """A short, Markdown-table-safe name for a field's type."""
    origin = get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{value}`" for value in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " \\| ".join(type_name(arg) for arg in get_args(annotation))
    if origin is list:
        (item,) = get_args(annotation) or (Any,)
        return f"list[{type_name(item)}]"
    if annotation is type(None):
        return "None"
    if annotation is SecretStr:
        return "secret"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, Path):
        value = str(value)
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render_docs() -> str:
    """The whole of docs/configuration.md."""
    rows = []
    for name, field in Settings.model_fields.items():
        description = field.description or ""
        rows.append(
            f"| `{name}` | `NOTESTREAM_{name.upper()}` | {type_name(field.annotation)} | "
            f"{_default(field)} | {_cell(description)} |"
        )
    return _HEADER + "\n".join(rows) + "\n"


def write_docs(path: Path = DOCS_PATH) -> bool:
    """Write the reference to ``path``; True if the file changed."""
    text = render_docs()
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return True
