"""One progress bar over a job of several stages whose items cost different times.

A bar that counts items of unequal cost (a teacher evaluation, then a training step five times
dearer) shows a wrong time estimate in every stage but the last. `StagedBar` counts seconds of work
instead: each stage's cost per item starts from an estimate (a timed trial) and becomes the measured
mean once its items run, so the remaining time it shows is the sum, over stages, of items left times
their cost.
"""

from __future__ import annotations

import time

from tqdm.auto import tqdm


class StagedBar:
    """`stages`: name -> (items, estimated seconds per item), in the order they run."""

    def __init__(self, desc: str, stages: dict[str, tuple[int, float]], disable: bool = False):
        self.items = {name: count for name, (count, _) in stages.items()}
        self.estimate = {name: cost for name, (_, cost) in stages.items()}
        self.done = dict.fromkeys(stages, 0)
        self.seconds = dict.fromkeys(stages, 0.0)
        self.stage = next(iter(stages))
        self.bar = tqdm(total=1.0, desc=desc, disable=disable,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}")
        self.last = time.perf_counter()
        self._refresh()

    def cost(self, stage: str) -> float:
        return self.seconds[stage] / self.done[stage] if self.done[stage] else self.estimate[stage]

    def start(self, stage: str, done: int = 0) -> None:
        """Enter `stage`, of which `done` items are already behind (a resumed run)."""
        self.stage, self.last = stage, time.perf_counter()
        for name in self.items:  # the stages before it are over, whatever they counted
            if name == stage:
                break
            self.items[name] = self.done[name]
        self.items[stage] -= done
        self._refresh()

    def resize(self, stage: str, items: int) -> None:
        """`stage` holds `items` in all (a run sized by time learns its step count as it goes)."""
        self.items[stage] = items
        self._refresh()

    def update(self, n: int = 1) -> None:
        now = time.perf_counter()
        self.done[self.stage] += n
        self.seconds[self.stage] += now - self.last
        self.last = now
        self._refresh()

    def _refresh(self) -> None:
        total = sum(self.items[s] * self.cost(s) for s in self.items)
        done = sum(self.done[s] * self.cost(s) for s in self.items)
        # tqdm's remaining time is (total - n) / (n / elapsed): with work counted in its own seconds
        # that is the seconds of work left.
        self.bar.total, self.bar.n = max(total, 1e-9), min(done, total)
        self.bar.set_postfix_str(f"{self.stage} {self.done[self.stage]}/{self.items[self.stage]}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()
