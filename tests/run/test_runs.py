import json

import pytest
from helpers.run_files import write_run

from verity.cli.runs import cli_main
from verity.run.runs import (
    RunRow,
    describe_run,
    format_runs,
    list_runs,
    metric_series,
    read_jsonl,
    run_name,
)


def test_list_runs_reads_summaries_and_skips_run_internals(tmp_path):
    write_run(tmp_path, "b-run", steps=10)
    write_run(tmp_path / "sweep", "a-run", steps=20, status="running")
    (tmp_path / "b-run" / "checkpoints" / "step_000010").mkdir(parents=True)
    (tmp_path / "b-run" / "checkpoints" / "step_000010" / "metrics.jsonl").write_text("")
    (tmp_path / "notes").mkdir()
    rows = list_runs(tmp_path)
    # "running" in its summary, but no process holds its lock: it died.
    assert [(r.name, r.steps, r.status) for r in rows] == [("b-run", 10, "finished"), ("a-run", 20, "dead")]
    # best held-out accuracy: 0.2 + 0.5 * 10/10; wall time: 2 s/step * 10 + 3
    assert rows[0].best_accuracy == pytest.approx(0.7)
    assert rows[0].wall_time_s == 23.0


def test_a_run_without_summary_is_described_from_its_metrics(tmp_path):
    run_dir = write_run(tmp_path, "crashed", steps=8, eval_every=4)
    (run_dir / "summary.json").unlink()
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write('{"step": 9, "time": 18.0, "rew')  # killed mid-line
    row = describe_run(run_dir)
    assert row == RunRow("crashed", run_dir, 8, None, pytest.approx(0.7), 16.0, "unknown")
    assert run_name(run_dir) == "crashed"


def test_a_corrupt_line_before_the_last_names_the_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON object"):
        read_jsonl(path)


def test_metric_series_skips_rows_without_the_key_and_non_finite_values(tmp_path):
    rows = [{"step": 1, "time": 2.0, "kl": 0.5}, {"step": 2, "time": 4.0}, {"step": 3, "time": 6.0, "kl": None}]
    rows.append({"step": 4, "time": 8.0, "kl": 0.25})
    assert metric_series(rows, "kl") == [(1, 2.0, 0.5), (4, 8.0, 0.25)]


def test_format_runs_aligns_columns():
    rows = [
        RunRow("quickstart", None, 20, 20, 0.7, 3725.0, "finished"),
        RunRow("x", None, 3, None, None, 42.4, "running"),
    ]
    assert format_runs(rows).splitlines() == [
        "name        steps  best acc  wall time  status    path",
        "quickstart  20/20  0.700     1h02m      finished  None",
        "x           3      -         0m42s      running   None",
    ]
    assert format_runs([]) == "no runs found"


def test_cli_prints_the_table_and_reports_a_missing_root(tmp_path, capsys):
    write_run(tmp_path, "tiny")
    assert cli_main([str(tmp_path)]) == 0
    assert "tiny  20/20  0.700" in capsys.readouterr().out
    assert cli_main([str(tmp_path / "nope")]) == 1
    assert "no such directory" in capsys.readouterr().err


def test_fixture_run_is_consistent(tmp_path):
    run_dir = write_run(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    last_eval = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "eval/accuracy" in r][-1]
    assert summary["eval_after"]["accuracy"] == last_eval["eval/accuracy"] == pytest.approx(0.7)


def test_a_run_bounded_by_wall_time_shows_its_limit_not_an_unreachable_step_count():
    row = RunRow("arm", None, 206, 100000, 0.5, 15.2, "finished", time_limit_s=15.0)
    assert format_runs([row]).splitlines()[1].split()[1:3] == ["206", "(limit"]
    assert "100000" not in format_runs([row])
