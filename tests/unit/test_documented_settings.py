"""Every variable the app reads is passed by compose.yaml and documented in .env.example."""

from __future__ import annotations

import re

import yaml

from loadtest.stack import ROOT

READERS = (
    r'(?:read_integer|read_number|_choice|_url|env\.get)\(\s*(?:env,\s*)?"([A-Z][A-Z0-9_]+)"'
    r'|\("([A-Z][A-Z0-9_]+)", "[a-z_]+"'
)  # (VARIABLE, "lab_settings row") in cli.py


def variables_read_by(*modules: str) -> set[str]:
    names: set[str] = set()
    for module in modules:
        for match in re.findall(READERS, (ROOT / "app" / "cachelab" / module).read_text()):
            names |= {name for name in match if name}
    return names


def test_the_apps_settings_reach_the_container_and_are_documented():
    app_vars = variables_read_by("config.py")
    assert {"CACHE_STRATEGY", "CACHE_MISS_SLOTS", "WRITE_API_TOKEN"} <= app_vars
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    passed = set(compose["services"]["app"]["environment"])
    assert app_vars - passed == set(), "compose.yaml does not pass these to the app"
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example, re.MULTILINE))
    assert app_vars - documented == set(), ".env.example does not document these"


def test_db_init_settings_reach_the_container_and_are_documented():
    db_vars = variables_read_by("cli.py") - {"DATABASE_URL"}
    assert {"SLOW_QUERY_SECONDS", "ITEM_COUNT", "ITEM_PAYLOAD_BYTES"} <= db_vars
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert db_vars - set(compose["services"]["db-init"]["environment"]) == set()
    example = (ROOT / ".env.example").read_text()
    assert all(re.search(rf"^#? ?{name}=", example, re.MULTILINE) for name in db_vars)
