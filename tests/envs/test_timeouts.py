"""call_with_timeout: a result, an exception passed on, or CallTimedOut at the limit while the call hangs on."""

from __future__ import annotations

import threading
import time

import pytest

from verity.envs.timeouts import CallTimedOut, call_with_timeout


def test_a_call_within_its_limit_returns_or_raises_as_itself() -> None:
    assert call_with_timeout(lambda: 6 * 7, 1.0, "answer") == 42
    with pytest.raises(ZeroDivisionError):
        call_with_timeout(lambda: 1 / 0, 1.0, "divide")


def test_a_hanging_call_times_out_on_a_daemon_thread() -> None:
    release = threading.Event()
    start = time.monotonic()
    with pytest.raises(CallTimedOut, match=r"hang did not return within 0.2 s"):
        call_with_timeout(lambda: release.wait(30), 0.2, "hang")
    assert 0.2 <= time.monotonic() - start < 2
    (hung,) = [t for t in threading.enumerate() if t.name == "hang"]
    assert hung.daemon  # it cannot keep the process alive
    release.set()
    hung.join(5)
