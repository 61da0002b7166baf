"""What one cycle may remember for the next: an object the shell owns and passes in.

`schedule(snapshot, config, now, memo)` stays a pure function of its arguments: every answer
kept here is a function of what it is keyed by (a config's layout, the busy GPUs of a cycle,
an earliest-start walk's inputs), so a warm Memo gives exactly the decisions a cold one does,
only faster. Nothing in the core is remembered anywhere else: two shells in one process,
each with its own Memo, never see each other's answers, and a test starts cold by passing
none (then the cycle builds a fresh one and drops it).
"""

from __future__ import annotations

from typing import Any, Callable


class Memo:
    # A shell runs a few configs at most (the simulator one per policy): keep that many.
    MAX_CONFIGS = 8

    def __init__(self) -> None:
        # id(config) -> (config, its layout); the config is kept so its id cannot be reused.
        self._layouts: dict[int, tuple[Any, Any]] = {}

    def layout(self, config: Any, build: Callable[[Any], Any]) -> Any:
        """The read-only layout of `config` (capacity._Layout), built once per config."""
        found = self._layouts.get(id(config))
        if found is not None and found[0] is config:
            return found[1]
        layout = build(config)
        if len(self._layouts) >= self.MAX_CONFIGS:  # a dict keeps insertion order: drop the oldest
            del self._layouts[next(iter(self._layouts))]
        self._layouts[id(config)] = (config, layout)
        return layout
