import json
import math
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from verity.tracking.config import TrackingConfig
from verity.tracking.trackers import JsonlTracker, build_tracker, mlflow_metric_name

ROWS = [
    (1, {"reward/mean": 0.25, "loss/policy": -0.5, "eval/pass@4": 0.5}),
    (2, {"reward/mean": 0.75, "loss/policy": 0.125}),
    (3, {"reward/mean": 1.0, "eval/pass@4": 0.75, "task/arith/accuracy": 0.5}),
]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def logged_by_key(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as {metric: [(step, value), ...]}, the shape every backend is compared in."""
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, value in row.items():
            if key not in ("step", "time"):
                series.setdefault(key, []).append((row["step"], value))
    return series


def log_rows(kinds: list[str], run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    tracker = build_tracker(kinds, run_dir, "tiny", {"algo": {"name": "grpo"}})
    for step, metrics in ROWS:
        tracker.log(step, metrics)
    tracker.close()
    return logged_by_key(read_jsonl(run_dir / "metrics.jsonl"))


def test_jsonl_rows_carry_step_time_and_flush_before_close(tmp_path):
    ticks = iter([100.0, 101.5, 104.25])
    tracker = JsonlTracker(tmp_path / "m.jsonl", time_offset=10.0, clock=lambda: next(ticks))
    tracker.log(1, {"reward/mean": 0.5, "kl": 3})
    assert read_jsonl(tmp_path / "m.jsonl") == [{"step": 1, "time": 11.5, "reward/mean": 0.5, "kl": 3.0}]
    tracker.log(2, {"loss/policy": math.nan, "grad_norm": math.inf})
    tracker.close()
    assert read_jsonl(tmp_path / "m.jsonl")[1] == {
        "step": 2,
        "time": 14.25,
        "loss/policy": None,
        "grad_norm": None,
    }


def test_jsonl_appends_to_an_existing_file(tmp_path):
    path = tmp_path / "m.jsonl"
    for step in (1, 2):
        tracker = JsonlTracker(path)
        tracker.log(step, {"x": step})
        tracker.close()
    assert [row["step"] for row in read_jsonl(path)] == [1, 2]


@pytest.mark.parametrize(
    ("step", "metrics", "error", "match"),
    [
        (-1, {"x": 1.0}, ValueError, "non-negative int"),
        (1.0, {"x": 1.0}, ValueError, "non-negative int"),
        (1, {"x": "high"}, TypeError, "metric 'x' must be a number"),
        (1, {"step": 3.0}, ValueError, "'step' is reserved"),
    ],
)
def test_bad_rows_are_rejected_with_the_offending_name(tmp_path, step, metrics, error, match):
    tracker = JsonlTracker(tmp_path / "m.jsonl")
    with pytest.raises(error, match=match):
        tracker.log(step, metrics)
    tracker.close()


def test_unknown_tracker_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"unknown tracker\(s\) \['neptune'\].*tensorboard"):
        build_tracker(["neptune"], tmp_path, "tiny", {})


@pytest.mark.parametrize(("kind", "module"), [("wandb", "wandb"), ("mlflow", "mlflow"), ("trackio", "trackio")])
def test_missing_backend_names_the_extra(tmp_path, monkeypatch, kind, module):
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=rf"pip install 'verity\[{kind}\]'"):
        build_tracker([kind], tmp_path, "tiny", {})


def test_tracking_config_defaults_and_rejects_unknown_keys():
    config = TrackingConfig(trackers=["tensorboard"])
    assert (config.log_every, config.trackers) == (1, ["tensorboard"])
    assert "metrics.jsonl" in TrackingConfig.model_fields["trackers"].description
    with pytest.raises(ValidationError, match="log_evry"):
        TrackingConfig(log_evry=2)
    with pytest.raises(ValidationError, match="trackers"):
        TrackingConfig(trackers=["neptune"])


def test_mlflow_metric_names():
    assert mlflow_metric_name("eval/pass@4") == "eval/pass_at_4"
    assert mlflow_metric_name("task/x+y/reward") == "task/x_y/reward"
    assert mlflow_metric_name("time/generate") == "time/generate"


def test_tensorboard_records_the_jsonl_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    expected = log_rows(["tensorboard"], tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    recorded = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert recorded.keys() == expected.keys()
    for tag, series in expected.items():
        assert [step for step, _ in recorded[tag]] == [step for step, _ in series]
        assert [value for _, value in recorded[tag]] == pytest.approx([value for _, value in series])
    assert set(expected) == {"reward/mean", "loss/policy", "eval/pass@4", "task/arith/accuracy"}


@pytest.mark.slow
def test_mlflow_records_the_jsonl_metrics(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    expected = log_rows(["mlflow"], tmp_path)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("verity").experiment_id])
    assert (run.info.run_name, run.info.status) == ("tiny", "FINISHED")
    recorded = {
        key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, mlflow_metric_name(key)))
        for key in expected
    }
    assert recorded == expected


def read_wandb_records(path: Path) -> list[bytes]:
    """The records of a W&B offline ``.wandb`` file: a 7-byte file header, then LevelDB-log framing (32 KiB
    blocks; each fragment has checksum(4) length(2) type(1): 1 full, 2 first, 3 middle, 4 last)."""
    data, block, records, pending = path.read_bytes(), 32768, [], b""
    pos = 7
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        if length == 0 and kind == 0:
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            records.append(pending)
            pending = b""
    return records


@pytest.mark.slow
def test_wandb_offline_records_the_jsonl_metrics(tmp_path):
    pytest.importorskip("wandb")
    from wandb.proto import wandb_internal_pb2

    expected = log_rows(["wandb"], tmp_path)
    (path,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    recorded: dict[str, list[tuple[int, float]]] = {}
    for raw in read_wandb_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            row = {
                item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item
            }
            for key, value in row.items():
                if not key.startswith("_"):
                    recorded.setdefault(key, []).append((row["_step"], value))
    assert recorded == expected


TRACKIO_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from verity.tracking.trackers import build_tracker
    from trackio.sqlite_storage import SQLiteStorage
    tracker = build_tracker(["trackio"], Path(sys.argv[1]), "tiny", {"seed": 1}, project="verity-test")
    for step, metrics in json.loads(sys.argv[2]):
        tracker.log(step, metrics)
    tracker.close()
    print("LOGS=" + json.dumps(SQLiteStorage.get_logs("verity-test", "tiny")))
    """
)


@pytest.mark.slow
def test_trackio_local_records_the_jsonl_metrics(tmp_path):
    pytest.importorskip("trackio")
    # trackio fixes its storage directory at import time, so it runs in a fresh process pointed at tmp_path.
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", TRACKIO_SCRIPT, str(tmp_path), json.dumps(ROWS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("LOGS=")]
    logs = json.loads(line.removeprefix("LOGS="))
    recorded = logged_by_key([{k: v for k, v in row.items() if k != "timestamp"} for row in logs])
    assert recorded == logged_by_key(read_jsonl(tmp_path / "metrics.jsonl"))
    assert (tmp_path / "trackio" / "verity-test.db").exists()


def test_field_metrics_break_rewards_down_by_an_item_field() -> None:
    from verity.data.metrics import field_metrics, reward_range
    from verity.types import Completion, Item, Rollout, Score

    def rollout(kind: str | None, reward: float) -> Rollout:
        meta = {"kind": kind} if kind is not None else {}
        item = Item("t/0", "t", "p", "a", meta)
        completion = Completion([1], [0.0], "x", "stop")
        return Rollout(item=item, group=0, prompt_ids=[0], completion=completion, score=Score(reward))

    rollouts = [rollout("easy", 1.0), rollout("easy", 0.5), rollout("hard", 0.0), rollout(None, 1.0)]
    assert field_metrics(rollouts, ["kind"], threshold=1.0) == {
        "by/kind/easy/reward": 0.75,
        "by/kind/easy/accuracy": 0.5,
        "by/kind/hard/reward": 0.0,
        "by/kind/hard/accuracy": 0.0,
    }
    assert reward_range(rollouts) == {"reward/min": 0.0, "reward/max": 1.0}


@pytest.mark.usefixtures("one_thread")
def test_a_run_logs_the_fields_it_is_asked_to_group_by(make_config) -> None:
    from verity.loop import train

    cfg = make_config("tracking.group_by=[task]", "train.steps=1")
    train(cfg, quiet=True)
    (row,) = [
        r for r in map(json.loads, (cfg.run_dir / "metrics.jsonl").open()) if r["step"] == 1 and "loss/policy" in r
    ]
    assert row["by/task/seven/reward"] == pytest.approx(row["reward/mean"])
    assert row["reward/min"] <= row["reward/mean"] <= row["reward/max"]
