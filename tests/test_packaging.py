"""`pip install .` ships mappings/ and schemas/ inside the package, and an installed livegate finds them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from hatchling.builders.wheel import WheelBuilder

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_carries_mappings_and_schemas(tmp_path: Path) -> None:
    wheel = Path(next(iter(WheelBuilder(str(ROOT)).build(directory=str(tmp_path), versions=["standard"]))))
    names = set(zipfile.ZipFile(wheel).namelist())
    for source in [*ROOT.glob("mappings/**/*.yaml"), *ROOT.glob("schemas/**/*.json")]:
        assert f"livegate/_data/{source.relative_to(ROOT)}" in names, source
    for page in ("playground.html", "ui/index.html", "ui/app.js", "ui/app.css"):  # the pages livegate serves
        assert f"livegate/server/static/{page}" in names, page
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = ("from livegate.paths import MAPPINGS_DIR; from livegate.mapping import load_mappings; "
             "m = load_mappings(); print(MAPPINGS_DIR, len(m.files))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(site)},
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith(str(site / "livegate" / "_data" / "mappings")), out
