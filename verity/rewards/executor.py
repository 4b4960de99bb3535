"""The reward executor: scores a batch of completions without ever stopping the trainer.

Verifiers run in a pool of worker processes (``verity.rewards.pool``), each completion under a wall-clock limit;
a verifier that raises, hangs, kills its worker or returns garbage yields ``Score(0.0, reason=...)``. With
``in_process`` the composed reward runs in the calling process instead (no timeout, no process cost).
"""

from __future__ import annotations

import time
from collections import Counter
from types import TracebackType

from verity.rewards.compose import ComposedReward
from verity.rewards.config import RewardConfig
from verity.rewards.pool import WorkerPool
from verity.schema import ConfigError
from verity.types import Item, Score

# Counted in ``stats()``; each failure reason starts with the label of its kind, see ``_kind``.
_COUNTERS = ("scored", "failures", "timeouts", "crashes", "unscorable", "worker_restarts")


def _kind(reason: str) -> str:
    for kind, prefix in (("timeouts", "timeout"), ("crashes", "worker crashed"), ("unscorable", "unscorable")):
        if reason.startswith(prefix):
            return kind
    return "failures"


class RewardExecutor:
    """Scores completions with the reward of ``cfg``. Use as a context manager or call ``close()``."""

    def __init__(self, cfg: RewardConfig) -> None:
        self.cfg = cfg
        # Resolving here (also when workers will do the scoring) reports bad names and settings at start-up.
        try:
            self._reward = ComposedReward(cfg.components())
        except (ImportError, AttributeError, KeyError, TypeError, ValueError) as err:
            message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
            if isinstance(err, ImportError):
                message += (
                    "; the current directory and the config file's directory are on the import path, for other "
                    "places set PYTHONPATH or pip install -e your package"
                )
            raise ConfigError(f"reward.verifiers: {message}") from None
        batch = cfg.batch_size if self._reward.batched else None
        self._pool = (
            None
            if cfg.in_process
            else WorkerPool(cfg.components(), cfg.workers, cfg.timeout_s, cfg.start_method, batch)
        )
        self._counts: Counter[str] = Counter()
        self._seconds = 0.0
        self._closed = False

    def score(self, items: list[Item], completions: list[str]) -> list[Score]:
        """One ``Score`` per (item, completion) pair, in order."""
        if len(items) != len(completions):
            raise ValueError(f"score: {len(items)} items but {len(completions)} completions; pass one per item")
        if self._closed:
            raise RuntimeError("score: this RewardExecutor is closed; create a new one")
        start = time.perf_counter()
        if self._pool is None:
            scores = self._reward.score_batch(items, completions)
        else:
            scores = self._pool.run(list(zip(items, completions, strict=True)))
            self._counts["worker_restarts"] += self._pool.take_restarts()
        self._seconds += time.perf_counter() - start
        self._counts["scored"] += len(scores)
        for s in scores:
            if s.reason is not None:
                self._counts[_kind(s.reason)] += 1
        return scores

    def stats(self) -> dict[str, float]:
        """Counts since the previous call — scored, failures (raised or garbage), timeouts, crashes, unscorable,
        worker_restarts — and ``seconds`` spent scoring; then resets them."""
        out = {name: float(self._counts[name]) for name in _COUNTERS}
        out["seconds"] = self._seconds
        self._counts.clear()
        self._seconds = 0.0
        return out

    def close(self) -> None:
        """Stop the worker processes (idempotent)."""
        self._closed = True
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> RewardExecutor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
