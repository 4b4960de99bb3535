import base64
import html
import re

import pytest
from helpers.run_files import write_run

from verity.cli import plot
from verity.cli.report import cli_main, format_number, render_report, write_report
from verity.run.runs import metric_keys, read_metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def no_figures(monkeypatch):
    """Skip drawing curves in tests that check other sections (drawing is the slow part)."""
    monkeypatch.setattr(plot, "build_figures", lambda runs: [])


def row(page: str, *cells: str) -> bool:
    """Whether the page has a table row starting with these cells (label first, then numbers)."""
    pattern = r'<tr><td class="text">' + re.escape(cells[0]) + "</td>"
    pattern += "".join(rf'<td class="num">{re.escape(c)}</td>' for c in cells[1:])
    return re.search(pattern, page) is not None


def test_report_states_accuracy_before_final_and_best(tmp_path, no_figures):
    page = render_report(write_run(tmp_path, steps=20, eval_every=5))
    # accuracy = 0.2 + 0.5 s/20 at s = 0 and 20; pass@4 = accuracy + 0.1; maj@4 = accuracy + 0.05
    assert row(page, "accuracy", "0.200", "0.700", "0.700")
    assert row(page, "pass@4", "0.300", "0.800", "0.800")
    assert row(page, "maj@4", "0.250", "0.750", "0.750")
    assert row(page, "task/chain/accuracy", "0.150", "0.650", "0.650")


def test_report_lists_every_logged_metric_with_its_last_value(tmp_path, no_figures):
    run_dir = write_run(tmp_path, steps=20)
    page = render_report(run_dir)
    rows = read_metrics(run_dir)
    for key in metric_keys(rows):
        assert f'<td class="text">{html.escape(key)}</td>' in page, key
    assert len(metric_keys(rows)) == 17 + 4 + 3 + 2  # training, per-task training, eval, per-task eval
    # reward/mean runs from 0.1 + 0.8/20 at step 1 to 0.9 at step 20, in 20 training rows
    assert row(page, "reward/mean", "20", "0.14", "0.9", "0.14", "0.9")


def test_report_times_phases_and_shows_early_and_late_samples(tmp_path, no_figures):
    page = render_report(write_run(tmp_path, steps=20))
    # time/generate is 1.25 s of each 2 s step over 20 steps
    assert row(page, "generate", "1.25", "25", "62.5%")
    assert row(page, "step", "2", "40", "100.0%")
    # the step's logged reward/mean (over all its rollouts), not the mean of the few samples shown (0 and 1)
    assert "Early: step 1, mean reward 0.140" in page
    assert "Late: step 20, mean reward 0.900" in page
    assert "&lt;answer&gt;21&lt;/answer&gt;" in page
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page


def test_report_shows_status_warnings_and_config(tmp_path, no_figures):
    page = render_report(write_run(tmp_path, name="quick", steps=20, status="stopped"))
    assert "<h1>Run report: quick</h1>" in page
    assert row(page, "status") and '<td class="text">stopped</td>' in page
    assert '<li class="warn">step 7: 1 verifier timed out (scored 0)</li>' in page
    assert "group_size: 4" in page
    assert '<td class="text">20/20</td>' in page and '<td class="text">0m43s</td>' in page


def test_report_of_a_run_without_summary_uses_its_last_eval(tmp_path, no_figures):
    run_dir = write_run(tmp_path, steps=8, eval_every=4)
    (run_dir / "summary.json").unlink()
    page = render_report(run_dir)
    assert row(page, "accuracy", "-", "0.700", "0.700")
    assert "<p>None.</p>" in page  # no warnings


@pytest.mark.slow
def test_report_embeds_every_figure_as_png(tmp_path):
    run_dir = write_run(tmp_path, steps=10)
    out = write_report(run_dir)
    assert out == run_dir / "report.html"
    page = out.read_text()
    images = re.findall(r'<img alt="(\w+)" src="data:image/png;base64,([^"]+)">', page)
    assert [alt for alt, _ in images] == [stem for stem, _ in plot.build_figures(plot.load_runs([run_dir]))]
    assert len(images) == 11
    assert all(base64.b64decode(data)[:8] == PNG_SIGNATURE for _, data in images)
    assert "http" not in page.replace("http-equiv", "")


def test_cli_writes_where_asked_and_reports_a_missing_dir(tmp_path, capsys, no_figures):
    run_dir = write_run(tmp_path)
    assert cli_main([str(run_dir), "--out", str(tmp_path / "r" / "page.html")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "r" / "page.html")
    assert "0.700" in (tmp_path / "r" / "page.html").read_text()
    assert cli_main([str(tmp_path / "missing")]) == 1
    assert "no such run directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "text"), [(None, "-"), (float("nan"), "-"), (0.0, "0"), (2e-5, "2.00e-05"), (0.12345, "0.1235")]
)
def test_format_number(value, text):
    assert format_number(value) == text


def test_format_number_large_values_get_thousands_separators():
    assert format_number(123456.7) == "123,457"


def test_counts_in_the_outcome_table_are_integers() -> None:
    from verity.cli.report import outcome_section

    summary = {"eval_before": {"accuracy": 0.25, "items": 200, "verifier/scored": 800.0}, "eval_after": {}}
    html = outcome_section(summary, [])
    assert '<td class="num">200</td>' in html and '<td class="num">800</td>' in html
    assert '<td class="num">0.250</td>' in html and "200.000" not in html
