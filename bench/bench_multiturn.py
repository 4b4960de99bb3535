"""Tool use learned by RL: held-out accuracy and tool-call rate of the calculator environment before and after
training, with accuracy split by whether the episode called the tool (where the gain must come from).

The run is ``examples/calculator.yaml`` (the tiny base is built and cached on first use, ``VERITY_CACHE``
picks the cache); dotted overrides follow the config, e.g. ``train.steps=10``.

    python3 -m bench.bench_multiturn
    python3 -m bench.bench_multiturn train.steps=10 output_dir=/tmp/runs
"""

from __future__ import annotations

import argparse
import time

from verity.config import load_config
from verity.loop import train

CONFIG = "examples/calculator.yaml"
COLUMNS = ("accuracy", "env/tool_rate", "accuracy_with_tool", "accuracy_without_tool", "env/turns")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.steps=10")
    parser.add_argument("--config", default=CONFIG)
    args = parser.parse_args()
    cfg = load_config(args.config, ["tracking.quiet=true", *args.overrides])
    start = time.time()
    summary = train(cfg)
    print(
        f"{cfg.name}: {summary['steps']} RL steps, {cfg.eval.items or cfg.data.eval_items} held-out items, "
        f"{time.time() - start:.0f} s (base model build included when it was not cached)"
    )
    print(f"{'':8}" + "".join(f"{c:>24}" for c in COLUMNS))
    for when in ("before", "after"):
        result = summary[f"eval_{when}"]
        print(f"{when:8}" + "".join(f"{result.get(c, float('nan')):>24.3f}" for c in COLUMNS))


if __name__ == "__main__":
    main()
