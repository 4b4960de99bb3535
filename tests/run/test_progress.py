import io
import re

import pytest
from rich.console import Console

from verity.run.progress import RunProgress, format_duration, task_numbers


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def plain_console(terminal: bool) -> Console:
    return Console(file=io.StringIO(), force_terminal=terminal, width=300, color_system="truecolor")


def output(console: Console) -> str:
    return console.file.getvalue()


TRAIN = {"reward/mean": 0.5, "accuracy": 0.25, "time/generate": 2.0, "time/train": 1.5, "time/step": 4.0}


def test_plain_lines_are_throttled_and_carry_rate_eta_and_last_eval():
    console, clock = plain_console(terminal=False), FakeClock()
    with RunProgress(10, console=console, line_every_s=10.0, clock=clock) as progress:
        clock.now = 1.0
        progress.update(1, {**TRAIN, "eval/accuracy": 0.125})
        clock.now = 2.0
        progress.update(2, TRAIN)  # within 10 s of the last line: not printed
        clock.now = 12.0
        progress.update(3, TRAIN)
        clock.now = 20.0
        progress.update(10, TRAIN)  # the last step is always printed
    lines = output(console).splitlines()
    assert [line.split(" | ")[0] for line in lines] == ["step 1/10", "step 3/10", "step 10/10"]
    # step 3 at t=12 s: 4 s/step, 7 steps left -> 28 s
    assert lines[1] == (
        "step 3/10 | reward 0.500 | train acc 0.250 | eval acc 0.125 (step 1) | 4.00 s/step | ETA 28s"
        " | generate 2.00s train 1.50s"
    )
    assert "ETA 0s" in lines[2]
    assert "\x1b" not in output(console)


def test_the_last_step_is_one_line_and_the_evaluation_after_it_updates_no_line():
    console, clock = plain_console(terminal=False), FakeClock()
    with RunProgress(2, console=console, clock=clock) as progress:
        progress.update(0, {"eval/accuracy": 0.25})
        progress.update(2, TRAIN)
        progress.update(2, {"eval/accuracy": 0.75})
    lines = output(console).splitlines()
    assert len(lines) == 1 and lines[0].startswith("step 2/2") and "eval acc 0.250 (step 0)" in lines[0]


def test_resumed_run_counts_only_its_own_steps():
    console, clock = plain_console(terminal=False), FakeClock()
    with RunProgress(100, console=console, start_step=50, clock=clock) as progress:
        clock.now = 30.0
        progress.update(60, {})
        assert progress.seconds_per_step() == 3.0
        assert progress.eta_seconds() == 120.0


def test_quiet_on_a_terminal_stays_plain_text():
    console, clock = plain_console(terminal=True), FakeClock()
    with RunProgress(5, quiet=True, console=console, clock=clock) as progress:
        progress.update(1, TRAIN)
        progress.message("saved checkpoint step_000001")
    assert output(console).splitlines()[1] == "saved checkpoint step_000001"
    assert "\x1b" not in output(console)


def test_live_display_on_a_terminal_shows_numbers_and_messages():
    console, clock = plain_console(terminal=True), FakeClock()
    with RunProgress(4, console=console, clock=clock) as progress:
        assert progress.live_mode
        clock.now = 6.0
        progress.update(2, {**TRAIN, "eval/accuracy": 0.75, "task/arith/accuracy": 0.5})
        progress.message("eval done")
    assert "\x1b" in output(console)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output(console))
    for expected in ("2/4", "3.00 s/step, ETA 6s", "eval acc", "0.750", "arith 0.50", "eval done"):
        assert expected in text


def test_task_numbers_prefer_accuracy_and_summarise_many_tasks():
    metrics = {"task/a/reward": 0.2, "task/a/accuracy": 0.9, "task/b/reward": 0.4, "task/b/x": 1.0, "kl": 0.1}
    assert task_numbers(metrics) == {"a": 0.9, "b": 0.4}
    progress = RunProgress(3, console=plain_console(terminal=False))
    progress.update(1, {f"task/t{i}/accuracy": i / 10 for i in range(8)})
    assert progress.status_line().endswith("tasks t0 0.00 t1 0.10 t2 0.20 t3 0.30 t4 0.40 t5 0.50 +2 more")


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0s"), (42, "42s"), (187, "3m07s"), (7500, "2h05m")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_total_steps_must_be_positive():
    with pytest.raises(ValueError, match="total_steps must be at least 1, got 0"):
        RunProgress(0)


def test_the_eta_of_a_run_bounded_by_wall_time_ends_at_its_limit():
    clock = FakeClock()
    progress = RunProgress(100000, console=plain_console(terminal=False), clock=clock, time_limit_s=15.0)
    with progress:
        clock.now = 5.0
        progress.update(50, TRAIN)  # 0.1 s/step: 99,950 steps would take 2h46m, the limit ends it in 10 s
        assert progress.eta_seconds() == 10.0
