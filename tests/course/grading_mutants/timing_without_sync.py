"""Task 7.1 mistake: the clock read before the device has finished (no synchronisation in the timed part)."""
TASK = "7.1"


def measure(fn, repeats=20, warmup=3, device="cpu", clock=time.perf_counter, sync=backend.synchronize):
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    q25, median, q75 = np.percentile(times, [25, 50, 75])
    return Timing(float(median), float(q25), float(q75), repeats)
