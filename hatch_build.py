"""Build hook: the source folder `engine/` installs as the import package `livegate`.

A wheel renames it through `[tool.hatch.build.targets.wheel.sources]`. An editable install cannot
rename a folder, so it puts `build/dev/` on sys.path, holding a `livegate` link to `engine/`:
edits to the checkout (code, mappings, schemas) take effect without reinstalling.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class EditableAlias(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version != "editable":
            return
        dev = Path(self.root) / "build" / "dev"
        dev.mkdir(parents=True, exist_ok=True)
        link = dev / "livegate"
        if not link.is_symlink():
            os.symlink(Path("..") / ".." / "engine", link, target_is_directory=True)
