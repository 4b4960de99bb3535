"""Imported by reward workers (and their forkserver) before the first code task, via the ``code`` verifier's
``preload``: probes the machine's isolation and the interpreter's file view (an ``ldd`` over the interpreter's
extension modules, about a second) once, so that cost is not charged to the first completion's time limit."""

from verity.rewards.sandbox.core import isolation
from verity.rewards.sandbox.fs import interpreter_view

if isolation().namespaces:
    interpreter_view()
