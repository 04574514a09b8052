"""On/off switches for the fast paths (opdpipe.fastlm, opdpipe.onednn): a stack of flags per switch,
so that `disabled()` blocks nest and restore what was there."""
from __future__ import annotations

import contextlib


class Toggle:
    def __init__(self):
        self._stack = [True]

    @property
    def on(self) -> bool:
        return self._stack[-1]

    @contextlib.contextmanager
    def disabled(self):
        """Off inside this block (for tests and before/after benchmarks)."""
        self._stack.append(False)
        try:
            yield
        finally:
            self._stack.pop()
