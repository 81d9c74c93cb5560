"""The local executor's pool: judges per GPU and how their busy time is counted."""



def test_judges_share_gpus_and_busy_time_counts_once_per_gpu() -> None:
    import time as _time

    from kforge.executors.local import JudgeWorker, LocalExecutor

    ex = LocalExecutor(device="cuda", gpus=[0, 1], judges_per_gpu=2)
    assert ex.plan_devices() == ["0", "0", "1", "1"]
    assert LocalExecutor(device="cuda", gpus=[3], judges_per_gpu=1).plan_devices() == ["3"]
    # GPU 0's two judges overlap (0-6 and 2-8: busy 8 of 10 s); GPU 1 is busy 0-5 s.
    t0 = _time.perf_counter() - 10.0
    ex.started_at = t0
    ex.workers = [JudgeWorker(i, g, None) for i, g in enumerate(["0", "0", "1", "1"])]
    ex.workers[0].intervals = [(t0, t0 + 6)]
    ex.workers[1].intervals = [(t0 + 2, t0 + 8)]
    ex.workers[2].intervals = [(t0, t0 + 5)]
    frac = ex.busy_fraction()
    assert frac is not None and abs(frac - (0.8 + 0.5) / 2) < 0.01
