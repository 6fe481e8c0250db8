"""The run's ledger: snapshot + journal (`nas.results.RunLog`) and the JSON differences it journals
(`core.jsondelta`)."""
from __future__ import annotations

import json
import random

import pandas as pd
import pytest

from core.errors import IntegrityError
from core.jsondelta import apply, delta
from nas.results import RunLog


def _random_value(rng: random.Random, depth: int = 0):
    kind = rng.choice(["int", "float", "str", "none", "list", "dict"] if depth < 3 else ["int", "str"])
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if kind == "dict":
        return {f"k{rng.randint(0, 5)}": _random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    return {"int": rng.randint(0, 9), "float": rng.random(), "str": rng.choice("abc"), "none": None}[kind]


def _mutate(rng: random.Random, value):
    if isinstance(value, list) and rng.random() < 0.5:
        return [*value, *(_random_value(rng, 2) for _ in range(rng.randint(1, 3)))]   # grown: journaled as a tail
    if isinstance(value, dict) and value:
        out = dict(value)
        key = rng.choice(sorted(out))
        if rng.random() < 0.2:
            del out[key]
        else:
            out[key] = _mutate(rng, out[key])
        if rng.random() < 0.3:
            out[f"n{rng.randint(0, 9)}"] = _random_value(rng, 2)
        return out
    return _random_value(rng, 1)


def test_delta_applied_gives_the_new_value_and_a_grown_list_costs_its_tail():
    rng = random.Random(0)
    for _ in range(500):
        old = _random_value(rng)
        new = _mutate(rng, old)
        d = json.loads(json.dumps(delta(old, new)))   # as the journal stores it
        assert apply(json.loads(json.dumps(old)), d) == new
        copy = json.loads(json.dumps(old))
        assert apply(copy, d, inplace=True) == new
    history = list(range(10_000))
    d = delta({"rng": 1, "history": history}, {"rng": 2, "history": [*history, 7]})
    assert d == {"d": {"rng": {"v": 2}, "history": {"a": [7]}}}
    assert delta({"a": [1]}, {"a": [1]}) is None and delta(1, True) == {"v": True}


def _row(i: int, accuracy: float) -> dict:
    return {"status": "ok", "accuracy": accuracy, "flops": i, "params": 3, "feasible": True, "latency_p_ms": 0.5}


def _run(log: RunLog, trials: int, check_every: int = 0) -> list:
    """`trials` trials (a free rejection every third) with a controller whose history grows in place."""
    rng = random.Random(1)
    history: list = []
    state = {}
    for i in range(trials):
        if i % 3 == 0:
            log.reject(f"r{i}", "flops above the limit", flops=10**9, params=1)
        history.append(log.complete(f"a{i}", f"t{i}", _row(i, rng.random()), False)["accuracy"])
        state = {"rng": {"state": rng.getrandbits(128)}, "history": history, "told": i,
                 "population": [[f"a{j}", j] for j in range(max(0, i - 4), i + 1)]}
        log.checkpoint(state, [f"p{i}"])
        if check_every and i % check_every == check_every - 1:
            back = RunLog.load(log.run_dir)
            assert back.rows == log.rows and back.pending == [f"p{i}"]
            assert back.controller_state == json.loads(json.dumps(state))
            assert back.best_feasible() == log.best_feasible() and back.n_evaluated() == log.n_evaluated() == i + 1
    return history


def test_checkpoints_resume_exactly_and_the_journal_is_folded_into_snapshots(tmp_path):
    log = RunLog(tmp_path, ["p"])
    log.save()
    _run(log, 400, check_every=37)
    lines = (tmp_path / "journal.jsonl").read_text().splitlines()
    assert 0 < len(lines) <= max(RunLog.MIN_JOURNAL, len(log.rows) // 2) + 1   # folded, not grown without bound
    assert json.loads((tmp_path / "state.json").read_text())["seq"] > 0       # (snapshots were taken)
    table = pd.read_csv(tmp_path / "results.csv")     # appended row by row, read as the table written whole
    pd.testing.assert_frame_equal(table, pd.read_csv(pd.io.common.StringIO(log.table().to_csv(index=False))))
    log.save()                                        # what a finished run leaves: one file
    assert not (tmp_path / "journal.jsonl").exists() and RunLog.load(tmp_path).rows == log.rows


def test_a_checkpoint_cut_short_is_ignored_and_any_other_damage_refused(tmp_path):
    log = RunLog(tmp_path, ["p"])
    log.save()
    _run(log, 30)
    journal = tmp_path / "journal.jsonl"
    with open(journal, "a") as f:
        f.write('{"seq": 31, "rows": [{"arch": "x"')    # a kill in the middle of a write
    assert RunLog.load(tmp_path).rows == log.rows
    lines = journal.read_text().split("\n")
    for damaged in (lines[:5] + lines[6:],                                              # a line deleted
                    [*lines[:3], lines[3].replace('"accuracy": 0.', '"accuracy": 1.', 1), *lines[4:]]):  # edited
        journal.write_text("\n".join(damaged))
        with pytest.raises(IntegrityError, match=r"journal.jsonl: line \d+: SHA-256 mismatch"):
            RunLog.load(tmp_path)


def test_a_crash_between_a_snapshot_and_clearing_the_journal_loses_and_repeats_nothing(tmp_path):
    log = RunLog(tmp_path, ["p"])
    log.save()
    _run(log, 20)
    journal = (tmp_path / "journal.jsonl").read_text()
    log.save()                                         # the snapshot now holds every journaled line ...
    (tmp_path / "journal.jsonl").write_text(journal)   # ... and the journal was not yet cleared
    back = RunLog.load(tmp_path)
    assert back.rows == log.rows and len({r["arch"] for r in back.rows}) == len(back.rows)
