"""Print the requirement lines app/pyproject.toml pins for the given packages.

    python pins.py pyproject.toml EXTRA NAME [NAME ...]

Looks in ``dependencies`` and the optional ``EXTRA``, so an image that needs a
few of the lab's packages installs exactly those, at the lab's versions
(pyproject.toml stays the one list of versions). Fails on a name it cannot find.
"""

from __future__ import annotations

import re
import sys
import tomllib


def pins(pyproject: str, extra: str, names: list[str]) -> list[str]:
    with open(pyproject, "rb") as handle:
        project = tomllib.load(handle)["project"]
    listed = project["dependencies"] + project.get("optional-dependencies", {}).get(extra, [])
    by_name = {re.split(r"[\s\[=<>!~;]", line, maxsplit=1)[0].lower(): line for line in listed}
    missing = [name for name in names if name.lower() not in by_name]
    if missing:
        raise SystemExit(f"pins: not pinned in {pyproject}: {', '.join(missing)}")
    return [by_name[name.lower()] for name in names]


if __name__ == "__main__":
    print("\n".join(pins(sys.argv[1], sys.argv[2], sys.argv[3:])))
