"""Task 7.1 mistake: the mean of the repeats reported as the median (one slow repeat moves it)."""
TASK = "7.1"


def measure(fn, repeats=20, warmup=3, device="cpu", clock=time.perf_counter, sync=backend.synchronize):
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        sync(device)
        times.append(clock() - start)
    q25, q75 = np.percentile(times, [25, 75])
    return Timing(float(np.mean(times)), float(q25), float(q75), repeats)
