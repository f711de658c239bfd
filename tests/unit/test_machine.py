"""Issue 20: how busy the machine was -- the load record every step carries."""

from __future__ import annotations

from loadtest import cgroups, machine


def load(other_containers: float, other: float, cpus: int = 2) -> machine.Load:
    return machine.Load(
        seconds=10,
        loadavg_start=1.0,
        loadavg_end=2.0,
        machine_cores=1.5,
        ours_cores=1.0,
        other_containers_cores=other_containers,
        other_cores=other,
        cpus=cpus,
    )


def test_a_step_is_disturbed_when_others_took_more_than_a_tenth_of_the_machine():
    assert not load(0.05, 0.1).disturbed  # 0.15 of 2 cores: 7.5 %
    assert load(0.15, 0.1).disturbed  # 12.5 %
    assert not load(0.0, -0.3).disturbed  # measurement noise below zero is no one's
    assert load(0.0, 0.0, cpus=1).disturbed is False


def test_summary_and_note_say_how_many_steps_were_disturbed():
    steps = [load(0.0, 0.05).to_dict(), load(0.5, 0.2).to_dict(), load(0.0, 0.0).to_dict()]
    found = machine.summarize(steps)
    assert found["steps"] == 3 and found["disturbed_steps"] == 1
    assert found["max_other_share"] == 0.35 and found["loadavg_max"] == 2.0
    text = machine.note(found)
    assert text.startswith("**taken under contention**") and "1 of 3" in text
    assert "under contention" not in machine.note(machine.summarize(steps[:1]))
    assert machine.note(machine.summarize([])) == "not recorded"


def test_cgroup_counters_v1_and_v2(tmp_path, monkeypatch):
    monkeypatch.setattr(cgroups, "ROOT", tmp_path)
    v1 = tmp_path / "cpuacct" / "docker" / "abc"
    v1.mkdir(parents=True)
    (v1 / "cpuacct.usage").write_text("2500000000\n")
    (tmp_path / "cpu" / "docker" / "abc").mkdir(parents=True)
    (tmp_path / "cpu" / "docker" / "abc" / "cpu.stat").write_text(
        "nr_periods 100\nnr_throttled 25\nthrottled_time 5\n"
    )
    assert cgroups.read("abc") == cgroups.Cpu(2.5, 100, 25)
    v2 = tmp_path / "system.slice" / "docker-def.scope"
    v2.mkdir(parents=True)
    (v2 / "cpu.stat").write_text("usage_usec 1500000\nnr_periods 10\nnr_throttled 1\n")
    assert cgroups.read("def") == cgroups.Cpu(1.5, 10, 1)
    assert cgroups.read("missing") is None
    used = cgroups.Cpu(3.0, 150, 40) - cgroups.Cpu(2.5, 100, 25)
    assert used.seconds == 0.5 and used.throttled_share == 0.3
    assert cgroups.Cpu(1.0).throttled_share is None
