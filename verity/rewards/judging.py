"""Text rules around model-based verifiers: strict parsing of a judge's verdict, and format constraints on the
policy's completion that a model judge cannot be trusted to enforce (reward hacking).

A judge's output counts only when it has exactly the asked-for form; anything else is a failure with a reason,
never a guess. The format constraints follow SPARK (Rahman et al., arXiv:2512.03244), whose PRM-rewarded policies
learned to pad solutions with steps and append further solved problems. Our reading turns that into checks,
applied before the judge is asked: exactly one final answer, nothing after it, a bounded number of steps, and no
step repeated word for word; optionally (our addition, after a tiny policy learned to write one-step
"solutions" a weak PRM passes) at least ``min_steps`` steps and every step of a set form (``step_pattern``).
"""

from __future__ import annotations

import re

from verity.rewards.steps import split_steps

DEFAULT_ANSWER_PATTERN = r"<answer>.*?</answer>"


def format_violation(
    text: str,
    separator: str = "\n",
    answer_pattern: str = DEFAULT_ANSWER_PATTERN,
    max_steps: int = 32,
    min_steps: int = 1,
    step_pattern: str | None = None,
) -> str | None:
    """Why ``text`` breaks the format constraints, or None when it keeps them. ``step_pattern`` (a regular
    expression) must match every step whole, the answer step included."""
    answers = list(re.finditer(answer_pattern, text, flags=re.DOTALL))
    if len(answers) != 1:
        return f"{len(answers)} final answers (exactly one allowed)"
    if text[answers[0].end() :].strip():
        return "text after the final answer"
    steps = [text[s:e].strip() for s, e in split_steps(text, separator)]
    if not min_steps <= len(steps) <= max_steps:
        return f"{len(steps)} steps (from {min_steps} to {max_steps} allowed)"
    if step_pattern is not None and not all(re.fullmatch(step_pattern, step) for step in steps):
        return "a step does not have the required form"
    if len(set(steps)) != len(steps):
        return "a step is repeated word for word"
    return None


def parse_verdict(output: str, labels: dict[str, float], prefix: str = "Verdict:") -> float | None:
    """The value of a judge's verdict: ``prefix`` must appear exactly once, on the last non-blank line, followed
    by exactly one of ``labels`` (case-sensitive). None when the output has any other form."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    if not lines or output.count(prefix) != 1 or not lines[-1].startswith(prefix):
        return None
    return labels.get(lines[-1][len(prefix) :].strip())


def parse_step_verdicts(output: str, steps: int, marks: tuple[str, str] = ("+", "-")) -> list[float] | None:
    """Step scores from a generative PRM's output: its first line must hold exactly ``steps`` whitespace-separated
    marks, each ``marks[0]`` (a correct step, 1.0) or ``marks[1]`` (a wrong one, 0.0). None otherwise."""
    line = output.strip().split("\n", 1)[0] if output.strip() else ""
    tokens = line.split()
    if len(tokens) != steps or any(t not in marks for t in tokens):
        return None
    return [1.0 if t == marks[0] else 0.0 for t in tokens]


def numbered_steps(text: str, separator: str = "\n") -> str:
    """The steps of ``text`` one per line, numbered from 1, as a PRM's prompt shows them."""
    return "\n".join(f"{k}. {text[s:e].strip()}" for k, (s, e) in enumerate(split_steps(text, separator), 1))
