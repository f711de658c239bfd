"""The files a benchmark report is made of: ``<stem>.json`` (the figures),
``<stem>.md`` (the tables) and ``<stem>.png`` (the chart), written into a run's
results folder and published, the three together, into ``docs/results``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from .numbers import clean


def report_files(results_dir: Path, stem: str) -> dict[str, Path]:
    return {
        "json": results_dir / f"{stem}.json",
        "markdown": results_dir / f"{stem}.md",
        "chart": results_dir / f"{stem}.png",
    }


def write_report(
    results_dir: Path,
    stem: str,
    data: dict,
    markdown: Callable[[dict], str],
    draw: Callable[[Path, dict], object],
) -> dict[str, Path]:
    """The figures as JSON (no NaN: missing figures are null), the tables, the chart."""
    files = report_files(results_dir, stem)
    files["json"].write_text(json.dumps(clean(data), indent=2, allow_nan=False, default=str))
    files["markdown"].write_text(markdown(data))
    draw(files["chart"], data)
    return files


def publish(results_dir: Path, stem: str, target: Path) -> None:
    """Copy the three files of a report into ``target`` (e.g. docs/results)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in report_files(results_dir, stem).values():
        shutil.copy2(path, target / path.name)
