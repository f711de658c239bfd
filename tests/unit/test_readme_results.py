"""Issue 20: README.md's figures are generated from docs/results, and agree with it."""

from __future__ import annotations

import json
import re
import shutil

from loadtest import goals, readme
from loadtest.stack import ROOT

BEFORE_AFTER = ("before-after/capacity", "before-after/hits")
FIGURE = re.compile(r"\d[\d,.]*\s*(?:ms|s\b|%|×|x\b|req/s|queries)")


def results_section(text: str) -> str:
    start = text.index("\n## Results")
    end = text.index("\n## ", start + 5)
    return text[start:end]


def test_readme_figures_are_the_published_results():
    current = readme.README.read_text()
    assert readme.BLOCK.search(results_section(current)), "no generated block in Results"
    assert readme.render(current) == current, (
        "README.md disagrees with docs/results: run `python -m loadtest.readme`"
    )
    assert (readme.RESULTS / "goals.md").read_text() == goals.render(readme.RESULTS)


def test_no_figure_in_the_results_section_outside_a_generated_block():
    section = results_section(readme.README.read_text())
    outside = readme.BLOCK.sub("", section)
    outside = re.sub(r"`[^`]*`", "", outside)  # commands
    outside = re.sub(r"\]\([^)]*\)", "]", outside)  # link targets
    outside = re.sub(r"95 % (confidence|CI)", "", outside)  # a definition, not a result
    assert not FIGURE.findall(outside), FIGURE.findall(outside)


def test_a_changed_result_changes_the_readme(tmp_path):
    """The check can fail: a different published figure renders a different README."""
    folder = tmp_path / "results"
    shutil.copytree(readme.RESULTS, folder)
    current = readme.README.read_text()
    for name in (
        "capacity.json",
        "hits.json",
        "summary.json",
        "staleness.json",
        "before-after/capacity.json",
        "before-after/hits.json",
    ):
        path = folder / name
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        data["meta"]["started_utc"] = "1999-01-01 00:00"
        path.write_text(json.dumps(data))
        assert readme.render(current, folder) != current, name
        path.write_text((readme.RESULTS / name).read_text())


def test_every_published_result_has_its_command_in_the_docs():
    docs = (ROOT / "docs" / "load-testing.md").read_text()
    for name in ("capacity", "hits", "staleness", "sweep", "summary", *BEFORE_AFTER):
        path = readme.RESULTS / f"{name}.json"
        if path.exists():
            command = json.loads(path.read_text())["meta"]["command"]
            assert command.split(" --publish")[0] in docs, command


def test_every_table_row_has_its_header_s_columns():
    """A cell outside the columns (e.g. a flag after the last `|`) is dropped
    or misplaced by Markdown renderers."""
    for path in [readme.README, *sorted(readme.RESULTS.glob("*.md"))]:
        header = None
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.startswith("|"):
                header = None
                continue
            cells = line.strip().removeprefix("|").split("|")
            assert cells[-1] == "", f"{path.name}:{number}: text after the last |: {line}"
            if header is None:
                header = len(cells)
            assert len(cells) == header, f"{path.name}:{number}: {len(cells) - 1} cells: {line}"


def test_every_results_file_the_docs_name_exists():
    for doc in [readme.README, *sorted((ROOT / "docs").glob("*.md"))]:
        for name in re.findall(r"docs/results/([\w.-]+\.(?:md|png|json))", doc.read_text()):
            assert (readme.RESULTS / name).exists(), f"{doc.name} names docs/results/{name}"


def test_the_spread_goal_counts_every_published_benchmark(tmp_path):
    """A single-run benchmark in docs/results fails "every figure carries its
    spread", however many others are repeated."""
    folder = tmp_path / "results"
    shutil.copytree(readme.RESULTS, folder)

    def spread_goal() -> tuple[str, bool | None]:
        goal = next(row for row in goals.rows(folder) if row[0].startswith("Every published"))
        return goal[1], goal[2]

    for name in ("summary", "staleness", "sweep"):
        (folder / f"{name}.json").unlink(missing_ok=True)
    assert spread_goal() == (
        "2 of 2 published benchmarks repeated, with 95 % t-intervals (capacity, hits); "
        "commands in each report and docs/load-testing.md",
        True,
    )
    staleness = json.loads((readme.RESULTS / "staleness.json").read_text())
    staleness["meta"]["rounds"] = 1
    (folder / "staleness.json").write_text(json.dumps(staleness))
    figure, met = spread_goal()
    assert met is False and "single runs: staleness" in figure
    staleness["meta"]["rounds"] = 3
    (folder / "staleness.json").write_text(json.dumps(staleness))
    assert spread_goal()[1] is True
    sweep = json.loads((readme.RESULTS / "sweep.json").read_text())
    for batches, verdict in ((1, False), (3, True)):
        sweep["meta"]["batches"] = batches
        (folder / "sweep.json").write_text(json.dumps(sweep))
        figure, met = spread_goal()
        assert met is verdict, figure
    assert "sweep (batch means of one run)" in figure


def test_the_open_loop_share_of_the_closed_loop_takes_both_rates_from_one_run(tmp_path):
    """The goal's closed-loop rate came from the hits benchmark, another run under
    other load: a quiet open loop over a contended closed loop read 52 % "met"
    where the capacity run's own probe gave 37 %. Changing hits.json must not
    move it."""
    folder = tmp_path / "results"
    shutil.copytree(readme.RESULTS, folder)

    def share_goal() -> tuple[str, bool | None]:
        goal = next(row for row in goals.rows(folder) if row[0].startswith("… and at least"))
        return goal[1], goal[2]

    before = share_goal()
    capacity = json.loads((folder / "capacity.json").read_text())
    two = capacity["systems"]["two-tier"]
    assert f"{two['summary']['knee_rps'] / two['closed_rps']:.0%}" in before[0]
    hits = json.loads((folder / "hits.json").read_text())
    hits["modes"]["pure-hit"]["rows"]["two-tier"]["rps"]["mean"] = 1.0
    (folder / "hits.json").write_text(json.dumps(hits))
    assert share_goal() == before
