"""Issue 20: the loadtest package's shape -- no import cycle, short modules with one job."""

from __future__ import annotations

import ast

from loadtest.stack import ROOT

PACKAGE = ROOT / "loadtest"
MAX_LINES = 450  # a module past this has grown a second job: split it


def imports_of(path) -> set[str]:
    """The loadtest modules a module imports, at any depth of its code."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found |= {alias.name for alias in node.names}
            elif node.module and node.module.startswith("loadtest."):
                found.add(node.module.split(".")[1])
            elif node.module == "loadtest":
                found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("loadtest.")}
    return found


def modules() -> dict[str, set[str]]:
    names = {p.stem for p in PACKAGE.glob("*.py")}
    return {p.stem: imports_of(p) & names for p in PACKAGE.glob("*.py")}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_loadtest():
    graph = modules()
    assert {"bench", "latency", "hitbench", "capacity", "sweep", "staleness"} <= set(graph)
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"


def test_every_module_is_short_and_says_what_it_is_for():
    for path in PACKAGE.glob("*.py"):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), f"{path.name} has no docstring saying its job"
        lines = len(path.read_text().splitlines())
        assert lines <= MAX_LINES, f"{path.name} has {lines} lines: two jobs? split it"


def test_one_list_of_strategies():
    """The app's list, everywhere: no module in loadtest spells its own."""
    from cachelab.config import STRATEGIES

    for path in PACKAGE.glob("*.py"):
        text = path.read_text()
        spelled = '"none", "cache-aside", "swr", "two-tier"'
        assert spelled not in text, f"{path.name} keeps its own list of strategies"
    from loadtest import latency

    parser = __import__("argparse").ArgumentParser()
    latency.add_arguments(parser)
    assert parser.parse_args([]).strategies == list(STRATEGIES)


def test_each_topology_has_its_default_systems():
    """`hits --topology`: single node, the Valkey Cluster, or both in one table; the
    ceiling in every one, no system that needs a profile (`before`, `two-tier@100ms`)."""
    from loadtest import benchstack, hitbench

    single, cluster, both = (hitbench.systems_of(t) for t in benchstack.TOPOLOGIES)
    assert {"ceiling", "two-tier", "two-tier@app", "flask-caching", "edge"} <= set(single)
    assert cluster == ["ceiling", "two-tier@cluster", "swr@cluster", "cache-aside@cluster"]
    assert both == [name for name in benchstack.BY_NAME if name in set(single) | set(cluster)]
    assert not {"before", "two-tier@100ms"} & set(both)
    for name in single:
        assert benchstack.BY_NAME[name].cache_services == ("redis",), name
    for name in cluster[1:]:
        assert benchstack.BY_NAME[name].cache_services == benchstack.CLUSTER_NODES, name
