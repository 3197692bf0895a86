"""Task 7.1 mistake: no warm-up calls, so the first (slow) calls are timed."""
TASK = "7.1"


def measure(fn, repeats=20, warmup=3, device="cpu", clock=time.perf_counter, sync=backend.synchronize):
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        sync(device)
        times.append(clock() - start)
    q25, median, q75 = np.percentile(times, [25, 50, 75])
    return Timing(float(median), float(q25), float(q75), repeats)
