"""The timing harness, on a fake clock: warm-up excluded, sync called, medians right."""

import pytest

from minigen.bench import measure


class FakeClock:
    """Each call to fn advances time by the next duration; the clock reads it."""

    def __init__(self, durations):
        self.now, self.durations, self.calls = 0.0, list(durations), 0

    def __call__(self):
        return self.now

    def work(self):
        self.now += self.durations[self.calls]
        self.calls += 1


def test_warmup_is_excluded_and_median_is_right():
    clock = FakeClock([100.0, 100.0, 3.0, 1.0, 2.0, 50.0, 4.0])  # two slow warm-up calls
    syncs = []
    timing = measure(clock.work, repeats=5, warmup=2, device="cuda",
                     clock=clock, sync=lambda device: syncs.append(device))
    assert clock.calls == 7
    assert timing.median == 3.0 and timing.q25 == 2.0 and timing.q75 == 4.0
    assert timing.repeats == 5
    assert syncs == ["cuda"] * 6, "one sync after warm-up and one after every timed call"


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="repeats >= 1"):
        measure(lambda: None, repeats=0)
