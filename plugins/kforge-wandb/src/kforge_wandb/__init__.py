"""kforge-wandb: log a kforge run to Weights & Biases.

One logger, ``wandb``, registered through the ``register_loggers`` hook. It receives every event of a
run and logs:

- per result: ``results``, ``correct``, ``correct_rate`` and ``speedup/<problem>`` (correct ones), with
  ``results`` as the x-axis of every chart;
- per improvement: ``best_speedup/<problem>`` (the best-so-far curve of each problem) and
  ``best_geomean`` (over the problems solved so far);
- at the end: the summary (fast_p, geomean, correctness rate, usage) in the run's summary, and
  ``final_table``, one row per problem.

It is on when ``WANDB_PROJECT`` is set or ``KFORGE_WANDB=1``, and off with ``KFORGE_WANDB=0`` (or
``KFORGE_BLOCK_PLUGINS=kforge-wandb``). W&B's own variables apply: ``WANDB_ENTITY``, ``WANDB_MODE``
(``offline`` writes under ``<run_dir>/wandb`` for a later ``wandb sync``), ``WANDB_API_KEY``. The W&B
run's id derives from the run directory, so ``kforge resume`` continues the same W&B run.

A failure to reach W&B is reported on stderr and never stops the kforge run.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path
from typing import Any

import kforge
from kforge.api import Logger
from kforge.metrics import geomean

__version__ = "0.1.0"

ON = ("1", "true", "yes", "on")
OFF = ("0", "false", "no", "off")


def enabled(env: dict[str, str] | None = None) -> bool:
    env = dict(os.environ) if env is None else env
    flag = env.get("KFORGE_WANDB", "").strip().lower()
    if flag in OFF:
        return False
    return flag in ON or bool(env.get("WANDB_PROJECT"))


def run_id(run_dir: str | Path) -> str:
    """A W&B run id that is the same every time this run directory is logged (resume continues it)."""
    path = Path(run_dir).resolve()
    stem = re.sub(r"[^a-z0-9]+", "-", path.name.lower()).strip("-")[:40]
    return f"{stem}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


def _warn(message: str) -> None:
    print(f"kforge-wandb: {message}", file=sys.stderr)


class WandbLogger(Logger):
    name = "wandb"
    description = ("results, best-so-far curves and the final table to Weights & Biases "
                   "(on with WANDB_PROJECT or KFORGE_WANDB=1)")

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.run: Any = None
        self.results = 0
        self.correct = 0
        self.best: dict[str, float] = {}
        self.tried: dict[str, int] = {}
        self.solved: dict[str, int] = {}
        self.best_candidate: dict[str, str] = {}
        self.status = "finished"

    def setup(self, run_dir: Any, recipe: dict[str, Any]) -> None:
        if not enabled():
            return
        try:
            import wandb
        except ImportError:
            _warn("wandb is not installed (pip install wandb): not logging this run")
            return
        run_dir = Path(run_dir)
        try:
            self.run = wandb.init(
                project=os.environ.get("WANDB_PROJECT") or "kforge",
                entity=os.environ.get("WANDB_ENTITY") or None, name=run_dir.name, id=run_id(run_dir),
                resume="allow", dir=str(run_dir), config=recipe,
                job_type="kforge-run", tags=[str((recipe.get("run") or {}).get("name") or "kforge")],
                settings=wandb.Settings(silent=True, console="off"))
            self.run.config.update({"kforge_version": kforge.__version__, "run_dir": str(run_dir)},
                                   allow_val_change=True)
            self.run.define_metric("results")
            self.run.define_metric("*", step_metric="results")
        except Exception as exc:  # noqa: BLE001 - no W&B must never mean no run
            _warn(f"could not start a W&B run ({type(exc).__name__}: {exc}): not logging this run")
            self.run = None

    def log(self, event: dict[str, Any]) -> None:
        if self.run is None:
            return
        kind = event.get("event")
        if kind == "result":
            self._result(event)
        elif kind == "summary":
            self._summary(event)
        elif kind == "run_finished":
            self.status = str(event.get("status") or "finished")

    def _result(self, e: dict[str, Any]) -> None:
        pid = str(e["problem"])
        self.results += 1
        self.tried[pid] = self.tried.get(pid, 0) + 1
        data: dict[str, Any] = {"results": self.results}
        if e.get("status") == "correct":
            self.correct += 1
            self.solved[pid] = self.solved.get(pid, 0) + 1
            s = e.get("speedup")
            if s is not None:
                data[f"speedup/{pid}"] = s
                if s > self.best.get(pid, 0.0):
                    self.best[pid] = s
                    self.best_candidate[pid] = str(e.get("candidate"))
                    data[f"best_speedup/{pid}"] = s
                    data["best_geomean"] = geomean(self.best.values())
        data["correct"] = self.correct
        data["correct_rate"] = self.correct / self.results
        self.run.log(data)

    def _summary(self, e: dict[str, Any]) -> None:
        import wandb

        flat: dict[str, Any] = {}
        for key in ("problems", "candidates", "correct", "correctness_rate", "problems_solved",
                    "geomean_speedup", "stopped", "shape", "device", "wall_s", "gpu_busy_fraction"):
            if key in e:
                flat[key] = e[key]
        for p, v in (e.get("fast_p") or {}).items():
            flat[f"fast_p/{p}"] = v
        for k, v in (e.get("usage") or {}).items():
            flat[f"usage/{k}"] = v
        self.run.summary.update(flat)
        # the run's one summary, read from its store (a resumed run's results before the resume count too)
        best = e.get("best") or {}
        per_problem = e.get("per_problem") or {}
        problems = list(dict.fromkeys([*per_problem, *best, *self.tried]))
        rows = []
        for pid in problems:
            b, st = best.get(pid) or {}, per_problem.get(pid) or {}
            rows.append([pid, b.get("speedup"), b.get("candidate"), b.get("status"),
                         st.get("tried", self.tried.get(pid, 0)), st.get("correct", self.solved.get(pid, 0))])
        columns: list[str | int] = ["problem", "best_speedup", "best_candidate", "status", "tried", "correct"]
        table = wandb.Table(columns=columns, data=rows)
        self.run.log({"results": self.results, "final_table": table})

    def close(self) -> None:
        if self.run is None:
            return
        try:
            self.run.finish(exit_code=0 if self.status == "finished" else 1)
        except Exception as exc:  # noqa: BLE001
            _warn(f"could not finish the W&B run: {exc}")
        self.run = None


@kforge.hookimpl
def register_loggers(register):
    register(WandbLogger)
