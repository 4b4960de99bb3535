import pytest
from helpers.run_files import write_run

pytest.importorskip("matplotlib")

from verity.cli.plot import build_figures, cli_main, load_runs, plot_runs, time_unit

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COMMON = {"reward", "accuracy", "response_length", "entropy", "kl", "clip_frac", "throughput", "phase_times"}
PER_TASK = {"task_reward", "task_accuracy", "eval_task_accuracy"}


def lines_by_label(figure, panel: int) -> dict[str, tuple[list, list]]:
    ax = figure.axes[panel]
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


@pytest.mark.slow
def test_plot_runs_writes_every_expected_figure_as_png(tmp_path):
    run_dir = write_run(tmp_path, "multi", steps=10, tasks=("arith", "chain"))
    paths = plot_runs([run_dir], tmp_path / "plots")
    assert {p.stem for p in paths} == COMMON | PER_TASK
    from matplotlib.image import imread

    for path in paths:
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        assert imread(path).shape[:2] == (400, 1100)  # figsize (11, 4) at 100 dpi


def test_a_multi_task_run_has_every_figure(tmp_path):
    run_dir = write_run(tmp_path, "multi", steps=10, tasks=("arith", "chain"))
    assert [stem for stem, _ in build_figures(load_runs([run_dir]))] == [
        "reward",
        "accuracy",
        "response_length",
        "entropy",
        "kl",
        "clip_frac",
        "throughput",
        "phase_times",
        "task_reward",
        "task_accuracy",
        "eval_task_accuracy",
    ]


def test_a_run_with_few_metrics_gets_only_their_figures(tmp_path):
    run_dir = tmp_path / "sparse"
    run_dir.mkdir()
    rows = ['{"step": 1, "time": 1.5, "kl": 0.5, "custom/thing": 3}', '{"step": 2, "time": 3.0, "kl": 0.25}']
    (run_dir / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    (path,) = plot_runs([run_dir], tmp_path / "out")
    assert path == tmp_path / "out" / "kl.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_a_single_task_run_has_no_per_task_figures(tmp_path):
    run_dir = write_run(tmp_path, "solo", steps=10, tasks=("arith",))
    assert {stem for stem, _ in build_figures(load_runs([run_dir]))} == COMMON


def test_figures_hold_the_logged_values_against_step_and_time(tmp_path):
    run_dir = write_run(tmp_path, "solo", steps=10, tasks=("arith",), eval_every=5)
    figures = dict(build_figures(load_runs([run_dir])))
    steps, rewards = lines_by_label(figures["reward"], 0)["reward/mean"]
    assert steps == list(range(1, 11))
    assert rewards == pytest.approx([0.1 + 0.08 * s for s in steps])
    times, _ = lines_by_label(figures["reward"], 1)["reward/mean"]
    assert times == [2.0 * s for s in steps]  # 20 s in all: the time axis stays in seconds
    accuracy = lines_by_label(figures["accuracy"], 0)
    assert set(accuracy) == {"eval/accuracy", "eval/pass@4", "eval/maj@4"}
    assert accuracy["eval/accuracy"] == ([0, 5, 10], pytest.approx([0.2, 0.45, 0.7]))


def test_several_runs_are_overlaid_with_distinct_legend_entries(tmp_path):
    first = write_run(tmp_path / "a", "same", steps=10, tasks=("arith", "chain"))
    second = write_run(tmp_path / "b", "same", steps=6, tasks=("arith", "chain"))
    figures = dict(build_figures(load_runs([first, second])))
    kl = lines_by_label(figures["kl"], 0)
    assert set(kl) == {f"same ({first})", f"same ({second})"}
    assert kl[f"same ({second})"][0] == list(range(1, 7))
    legend = [text.get_text() for text in figures["task_accuracy"].axes[1].get_legend().get_texts()]
    assert sorted(legend) == sorted(f"same ({d}): {t}" for d in (first, second) for t in ("arith", "chain"))


@pytest.mark.parametrize(("seconds", "unit"), [(90, "seconds"), (600, "minutes"), (3 * 3600, "hours")])
def test_time_unit(seconds, unit):
    assert time_unit(seconds)[0] == unit


def test_cli_defaults_to_the_run_plots_folder_and_reports_a_bad_dir(tmp_path, capsys):
    run_dir = tmp_path / "tiny"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "time": 1.0, "entropy": 1.25}\n')
    assert cli_main([str(run_dir)]) == 0
    assert capsys.readouterr().out.splitlines() == [str(run_dir / "plots" / "entropy.png")]
    assert cli_main([str(tmp_path)]) == 1
    assert "no metrics.jsonl here" in capsys.readouterr().err


def write_rows(run_dir, rows):
    import json

    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


def test_the_reward_band_is_labelled_and_stays_within_the_rewards(tmp_path):
    # A 0/1 reward with mean 0.9 has std 0.3: mean + std = 1.2 would leave the reward's range.
    rows = [
        {"step": s, "time": float(s), "reward/mean": 0.9, "reward/std": 0.3, "reward/min": 0.0, "reward/max": 1.0}
        for s in (1, 2)
    ]
    figures = dict(build_figures(load_runs([write_rows(tmp_path / "r", rows)])))
    ax = figures["reward"].axes[0]
    (band,) = ax.collections
    assert band.get_label() == "± 1 std over the step's samples"
    ys = band.get_paths()[0].vertices[:, 1]
    assert max(ys) == 1.0 and min(ys) == pytest.approx(0.6)


def test_a_figure_whose_values_are_all_zero_is_dropped(tmp_path):
    rows = [{"step": s, "time": float(s), "kl": 0.0, "clip_frac": 0.0, "reward/mean": 0.0} for s in (1, 2)]
    stems = [stem for stem, _ in build_figures(load_runs([write_rows(tmp_path / "r", rows)]))]
    assert stems == ["reward"]  # a reward of 0 is news; a KL of 0 without a KL term is not


def test_rewards_by_item_field_get_their_own_figure(tmp_path):
    rows = [{"step": 1, "time": 1.0, "by/kind/easy/reward": 0.75, "by/kind/hard/reward": 0.25}]
    figures = dict(build_figures(load_runs([write_rows(tmp_path / "r", rows)])))
    assert set(lines_by_label(figures["group_reward"], 0)) == {"kind/easy", "kind/hard"}
