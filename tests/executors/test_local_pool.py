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


def test_each_judge_is_told_its_gpu_its_sharing_and_its_spares(monkeypatch) -> None:
    from kforge.executors.local import JudgeWorker

    monkeypatch.delenv("KFORGE_SPARE_SANDBOXES", raising=False)
    env = JudgeWorker(0, "1", None, sharing=2, spares=3).environment()
    assert (env["CUDA_VISIBLE_DEVICES"], env["KFORGE_DEVICE"]) == ("1", "cuda")
    assert env["KFORGE_JUDGES_PER_GPU"] == "2" and env["KFORGE_SPARE_SANDBOXES"] == "3"
    cpu = JudgeWorker(0, None, None).environment()
    assert (cpu["CUDA_VISIBLE_DEVICES"], cpu["KFORGE_DEVICE"]) == ("", "cpu")
    assert "KFORGE_JUDGES_PER_GPU" not in cpu and "KFORGE_SPARE_SANDBOXES" not in cpu  # the judge's default


def _fake_smi(tmp_path, monkeypatch, memory_mib: list[int]) -> None:
    """An nvidia-smi on PATH that lists GPUs with this much memory (the executor reads it, no torch)."""
    smi = tmp_path / "nvidia-smi"
    lines = "\\n".join(str(m) for m in memory_mib)
    smi.write_text("#!/bin/sh\n"
                   'case "$*" in *memory.total*) printf "' + lines + '\\n" ;;\n'
                   '  *-L*) i=0; for m in ' + " ".join(map(str, memory_mib)) +
                   '; do echo "GPU $i: fake"; i=$((i+1)); done ;; esac\n')
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{__import__('os').environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_judges_per_gpu_by_default_follow_memory_and_cores(tmp_path, monkeypatch) -> None:
    from kforge.executors import local
    from kforge.executors.local import LocalExecutor, default_judges_per_gpu, gpu_memory_mib

    monkeypatch.setattr(local.os, "cpu_count", lambda: 16)
    _fake_smi(tmp_path, monkeypatch, [143771])  # one H200, 16 cores: 4 judges
    assert gpu_memory_mib() == [143771]
    assert LocalExecutor(device="cuda").plan_devices() == ["0"] * 4
    assert LocalExecutor(device="cuda", judges_per_gpu=1).plan_devices() == ["0"]  # the recipe wins
    _fake_smi(tmp_path, monkeypatch, [81559])  # one H100 80 GB: 3
    assert LocalExecutor(device="cuda").plan_devices() == ["0"] * 3
    _fake_smi(tmp_path, monkeypatch, [143771, 81559])  # the smallest card decides, and 16 cores for two GPUs: 2 each
    assert LocalExecutor(device="cuda").plan_devices() == ["0", "0", "1", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # only the 80 GB card is used
    assert LocalExecutor(device="cuda").plan_devices() == ["1"] * 3
    assert default_judges_per_gpu([24 * 1024 - 1], 64) == 1  # a 24 GB card: one judge
    assert default_judges_per_gpu([40 * 1024], 64) == 1 and default_judges_per_gpu([48 * 1024], 64) == 2
    assert default_judges_per_gpu([81559] * 8, 128) == 3 and default_judges_per_gpu([81559] * 8, 64) == 2
    assert default_judges_per_gpu([81559], 2) == 1 and default_judges_per_gpu([], 16) == 1
