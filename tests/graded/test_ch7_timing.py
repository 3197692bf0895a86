"""Graded checks of chapter 7: timing with warm-up and device synchronisation."""

import pytest


class FakeDevice:
    """An asynchronous device on a fake clock: calls only queue work, sync waits for it.

    Call k queues durations[k] seconds of work; time passes only when sync runs
    (as on a GPU, where the Python call returns at once).
    """

    def __init__(self, durations):
        self.durations, self.calls, self.syncs = list(durations), 0, 0
        self.now, self.queued = 0.0, 0.0

    def fn(self):
        self.queued += self.durations[self.calls]
        self.calls += 1

    def sync(self, device):
        self.syncs += 1
        self.now, self.queued = self.now + self.queued, 0.0

    def clock(self):
        return self.now


@pytest.mark.task7_1
def test_warm_up_is_not_timed_and_each_repeat_is_synchronised(graded):
    device = FakeDevice([100.0, 100.0, 100.0, 1.0, 2.0, 3.0, 4.0, 5.0])  # 3 slow warm-up calls, then 5
    timing = graded.measure(device.fn, repeats=5, warmup=3, device="cuda", clock=device.clock, sync=device.sync)
    assert device.calls == 8
    assert (timing.median, timing.q25, timing.q75, timing.repeats) == (3.0, 2.0, 4.0, 5)


@pytest.mark.task7_1
def test_timing_without_warm_up(graded):
    device = FakeDevice([2.0, 4.0, 6.0])
    timing = graded.measure(device.fn, repeats=3, warmup=0, device="cuda", clock=device.clock, sync=device.sync)
    assert device.calls == 3 and device.syncs >= 3
    assert (timing.median, timing.q25, timing.q75) == (4.0, 3.0, 5.0)


@pytest.mark.task7_1
def test_median_and_quartiles_of_skewed_timings(graded):
    # One slow repeat (a page fault, another process): the median ignores it, a mean would not.
    device = FakeDevice([1.0, 1.0, 2.0, 3.0, 2.0, 30.0])
    timing = graded.measure(device.fn, repeats=5, warmup=1, device="cuda", clock=device.clock, sync=device.sync)
    assert device.calls == 6
    assert (timing.median, timing.q25, timing.q75, timing.repeats) == (2.0, 2.0, 3.0, 5)
