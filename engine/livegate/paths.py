"""Where the mappings and schemas live: inside the installed package, or at the top of a checkout
(the package's source root is `engine/`, so the checkout's top is two folders up)."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    installed = _PACKAGE / "_data" / name  # a wheel carries them here (see pyproject.toml)
    return installed if installed.is_dir() else _PACKAGE.parent.parent / name


MAPPINGS_DIR = _data_dir("mappings")
SCHEMAS_DIR = _data_dir("schemas")
