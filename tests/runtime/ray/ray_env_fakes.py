"""An environment for the multi-turn tests on the Ray runtime, named by import path in ``env.name``."""

from __future__ import annotations

import os
import time
from pathlib import Path

from verity.envs.base import StepResult
from verity.types import Item

HANG_S = 30.0


class Turns:
    """Three turns of reward 0.25 each. With ``faults``, by item index (``task/index``) modulo 4: 1 raises on
    the second step, 2 hangs on the first (for ``HANG_S``); and the first step of item 5 kills its process once
    (``exit_marker`` is the file that remembers it did)."""

    def __init__(self, faults: bool = False, exit_marker: str = "") -> None:
        self.faults = faults
        self.exit_marker = Path(exit_marker) if exit_marker else None
        self.index = self.turns = 0

    def reset(self, item: Item) -> str:
        self.index, self.turns = int(item.id.rsplit("/", 1)[-1]), 0
        return item.prompt

    def step(self, turn: str) -> StepResult:
        self.turns += 1
        if self.faults and self.index % 4 == 1 and self.turns == 2:
            raise RuntimeError("environment bug")
        if self.faults and self.index % 4 == 2:
            time.sleep(HANG_S)
        if self.faults and self.index == 5 and self.exit_marker is not None and not self.exit_marker.exists():
            self.exit_marker.touch()
            os._exit(1)
        return "<result>ok</result>", 0.25, self.turns >= 3, {}
