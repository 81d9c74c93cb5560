"""``kforge problems check SOURCE``: can kforge's judge judge these problems? Each one is judged with its
own reference as the candidate; the logic is in :mod:`kforge.kernelbench`.

Data to stdout (the table, or ``--json`` lines), progress to stderr. Exit 0 when every selected problem
is judgeable, 1 when one is not (or some were left for another run by ``--budget-s``), 2 bad usage, 3
when the judge cannot start, 130 interrupted.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

EXIT_OK, EXIT_NOT_ALL, EXIT_USAGE, EXIT_INFRA, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def load_selection(source: str, levels: list[int], ids: list[str]) -> list[Any]:
    """SOURCE: 'builtin', a KernelBench-format file or directory, or built-in ids separated by commas."""
    from kforge.options import RecipeError
    from kforge.problems import builtin_problems, load_problem_path, select

    path = Path(source).expanduser()
    if source == "builtin":
        problems = builtin_problems()
    elif path.exists() or path.suffix == ".py" or "/" in source:
        problems = load_problem_path(path)
    else:
        problems = builtin_problems()
        ids = [*[s.strip() for s in source.split(",") if s.strip()], *ids]
    if levels:
        problems = [p for p in problems if p.level in levels]
        if not problems:
            raise RecipeError(f"no problems of level {' or '.join(map(str, levels))} in {source}")
    return select(problems, ids or None, None)


@click.command("check")
@click.argument("source")
@click.option("--level", "levels", type=int, multiple=True, help="Only problems of this level (repeatable).")
@click.option("--problem", "ids", multiple=True, metavar="ID", help="Only this problem (repeatable).")
@click.option("--shape", type=click.Choice(["auto", "small", "main"]), default="auto", show_default=True,
              help="auto: main on a GPU, small on the CPU.")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="An [eval] or [executor] setting, e.g. --set eval.max_timing_s=2 (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per problem on stdout, then a summary.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Append each problem's record to this JSONL file; problems already in it are not judged again.")
@click.option("--baseline-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the eager times as a KernelBench baseline JSON.")
@click.option("--compile-baseline-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Time torch.compile too and write its times as a KernelBench baseline JSON.")
@click.option("--compile-mode", default="default", show_default=True,
              help="The torch.compile mode for --compile-baseline-out.")
@click.option("--budget-s", type=float, default=None,
              help="Start no new problem after this many seconds (with --out, the next run goes on from there; "
                   "0 judges nothing: the table of what the --out file holds).")
@click.option("--retry-failed", is_flag=True, help="Judge again the problems the --out file holds as not judgeable.")
@click.option("--allow-download", is_flag=True,
              help="Judge problems that download a model (they are reported, not judged, by default).")
def check_cmd(source: str, levels: tuple[int, ...], ids: tuple[str, ...], shape: str, device: str,
              overrides: tuple[str, ...], as_json: bool, out_file: Path | None, baseline_out: Path | None,
              compile_baseline_out: Path | None, compile_mode: str, budget_s: float | None,
              retry_failed: bool, allow_download: bool) -> None:
    """Judge every selected problem of SOURCE with its own reference as the candidate.

    SOURCE is 'builtin', built-in ids separated by commas, or a KernelBench-format file or directory
    (e.g. a checkout's KernelBench/level1). Each problem goes through the whole judge (static checks,
    the op check and the profiler check off: the candidate is the trusted reference). Reported per
    problem: judgeable or not and why, the judge's memory plan, its peak memory, the eager time."""
    from kforge.options import RecipeError

    try:
        code = _check(source, list(levels), list(ids), shape, device, overrides, as_json, out_file, baseline_out,
                      compile_baseline_out, compile_mode, budget_s, retry_failed, allow_download)
    except RecipeError as exc:
        _fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        click.echo("Interrupted: the problems finished so far are kept" + (f" in {out_file}" if out_file else ""),
                   err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code)


def _settings(overrides: tuple[str, ...], device: str) -> tuple[dict[str, Any], dict[str, Any]]:
    from kforge.executors.local import LocalExecutor
    from kforge.options import OptionSet, RecipeError
    from kforge.recipe import CORE_OPTIONS, apply_override

    raw: dict[str, Any] = {}
    for o in overrides:
        apply_override(raw, o)
    if set(raw) - {"eval", "executor"}:
        raise RecipeError("kforge problems check takes --set eval.KEY=VALUE or executor.KEY=VALUE only")
    ev = CORE_OPTIONS["eval"].resolve(raw.get("eval", {}), "eval", skip=())
    ex = OptionSet("executor local", LocalExecutor.options).resolve(raw.get("executor", {}), "executor")
    if device != "auto" or "device" not in raw.get("executor", {}):
        ex["device"] = device
    # the candidate is the reference: the checks against library fallbacks would reject it by design
    ev["ops_check"] = ev["profile_check"] = False
    return ev, ex


def _check(source: str, levels: list[int], ids: list[str], shape: str, device: str, overrides: tuple[str, ...],
           as_json: bool, out_file: Path | None, baseline_out: Path | None, compile_baseline_out: Path | None,
           compile_mode: str, budget_s: float | None, retry_failed: bool, allow_download: bool) -> int:
    from kforge import kernelbench as kb
    from kforge.engine import InfrastructureError
    from kforge.executors.local import LocalExecutor
    from kforge.options import RecipeError

    problems = load_selection(source, levels, ids)
    ev, ex = _settings(overrides, device)
    for path in (out_file, baseline_out, compile_baseline_out):
        if path is not None:  # before any judging: a path that can't be written is a usage error, not lost work
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                if path == out_file:
                    with path.open("a"):
                        pass
                elif not os.access(path.parent, os.W_OK) or path.is_dir():
                    raise PermissionError(f"{path} is a folder, or its folder is not writable")
            except OSError as exc:
                raise RecipeError(f"cannot write {path}: {exc.strerror or exc}") from exc
    if compile_baseline_out is not None and compile_mode not in ev["baseline_compile"]:
        ev["baseline_compile"] = [*ev["baseline_compile"], compile_mode]
    done = {(r["problem_id"], r.get("hash")): r for r in kb.read_records(out_file)
            if r["judgeable"] or not retry_failed} if out_file else {}
    todo = [p for p in problems if (p.id, p.hash) not in done]
    kept = {p.id: done[(p.id, p.hash)] for p in problems if (p.id, p.hash) in done}
    console = _console()
    if kept:
        console.print(f"{len(kept)} of {len(problems)} problems already checked in {out_file}: not judged again",
                      markup=False)

    def on_record(rec: dict[str, Any]) -> None:
        if out_file is not None:
            kb.append_record(out_file, rec)
        if as_json:
            click.echo(json.dumps(rec, default=str))
        console.print(_progress_line(rec), markup=False)

    records: list[dict[str, Any]] = []
    for p in [p for p in todo if p.needs_download and not allow_download]:
        records.append(kb.skipped_record(p, "model_download", f"{p.needs_download}: not judged "
                                         "(--allow-download judges it, where the model is cached)"))  # known without judging
        on_record(records[-1])
    todo = [p for p in todo if not (p.needs_download and not allow_download)]
    unstarted: list[str] = []
    if todo and budget_s is not None and budget_s <= 0:  # the table of what the file holds: no judge started
        unstarted, todo = [p.id for p in todo], []
    if todo:
        executor = LocalExecutor(**ex)

        async def go() -> tuple[list[dict[str, Any]], list[str]]:
            try:
                await executor.start()
            except Exception as exc:  # noqa: BLE001
                raise InfrastructureError(f"could not start the judge: {exc}") from exc
            try:
                where = executor.device_info.get("device") or executor.device_info.get("device_kind")
                console.print(f"checking {len(todo)} problems on {where} with {len(executor.workers)} judge(s)",
                              markup=False)
                return await kb.run_check(todo, ev, executor, shape, on_record, budget_s)
            finally:
                await executor.shutdown()

        try:
            judged, unstarted = asyncio.run(go())
            records += judged
        except InfrastructureError as exc:
            _fail(str(exc), EXIT_INFRA)
    by_id = {**kept, **{r["problem_id"]: r for r in records}}
    ordered = [by_id[p.id] for p in problems if p.id in by_id]
    summary = kb.summarise_check(ordered, len(problems)) | {"remaining": len(problems) - len(ordered)}
    if as_json:
        click.echo(json.dumps(summary, default=str))
    else:
        _print_table(ordered, summary)
    if unstarted:
        console.print(f"{len(unstarted)} problems not started (--budget-s): run the same command again"
                      + ("" if out_file else " with --out FILE to go on from here"), markup=False)
    for path, which in ((baseline_out, "eager"), (compile_baseline_out, compile_mode)):
        if path is not None:
            data = kb.baseline_from_records(ordered, which)
            kb.write_baseline(path, data)
            n = sum(len(v) for v in data.values())
            console.print(f"wrote {path}: {which} times of {n} problems (KernelBench's baseline format)", markup=False)
    return EXIT_OK if summary["judgeable"] == len(problems) else EXIT_NOT_ALL


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True, no_color=bool(os.environ.get("NO_COLOR")) or None)


def _gib(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def _plan(plan: Any) -> str:
    if not isinstance(plan, dict):
        return "-" if plan is None else str(plan)
    return ", ".join(f"{k}={v}" for k, v in plan.items() if not isinstance(v, (dict, list)))[:60] or "-"


def _progress_line(r: dict[str, Any]) -> str:
    verdict = "judgeable" if r["judgeable"] else f"NOT judgeable ({r['reason']})"
    extra = f": {r['detail'][:200]}" if r["detail"] and not r["judgeable"] else ""
    return (f"{r['problem_id']}: {verdict}, eager {_ms(r['eager_ms'])} ms, peak {_gib(r['peak_gib'])} GiB "
            f"({r['seconds']:.1f} s){extra}")


def _print_table(records: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=False, no_color=bool(os.environ.get("NO_COLOR")) or None)
    if not console.is_terminal:
        console.width = 200  # a file or a pipe: whole rows, one per line
    table = Table(title="kforge problems check", header_style="bold")
    for col in ("problem", "judgeable", "reason", "working set GiB", "peak GiB", "peak / ws", "eager ms",
                "compile ms", "plan"):
        table.add_column(col, justify="left" if col in ("problem", "reason", "plan", "judgeable") else "right")
    for r in records:
        comp = ", ".join(_ms(v) for v in (r.get("compile_ms") or {}).values()) or "-"
        ratio = r.get("peak_over_working_set")
        table.add_row(r["problem_id"], "[green]yes[/]" if r["judgeable"] else "[red]no[/]",
                      "" if r["judgeable"] else r["reason"], _gib(r.get("working_set_gib")), _gib(r.get("peak_gib")),
                      "-" if ratio is None else f"{ratio:.2f}", _ms(r.get("eager_ms")), comp, _plan(r.get("plan")))
    console.print(table)
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(summary["reasons"].items()))
    left = f", {summary['remaining']} not checked yet" if summary["remaining"] else ""
    console.print(f"{summary['judgeable']} of {summary['problems']} judgeable ({reasons}{left})", markup=False)
    for r in records:
        if not r["judgeable"]:
            console.print(f"  {r['problem_id']} [{r['reason']}]: {r['detail'][:300]}", markup=False)


def print_published(data: dict[str, Any]) -> None:
    """``kforge report --baseline``: each problem's speedup against the published baseline beside its live one."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=False)
    if not console.is_terminal:
        console.width = 160
    hw = ", ".join(data["hardware"]) or "hardware not named"
    table = Table(title=f"against {data['baseline']} ({hw})", header_style="bold")
    for col in ("problem", "baseline ms (mean)", "best ms (mean)", "vs baseline", "vs live eager"):
        table.add_column(col, justify="left" if col == "problem" else "right")
    for r in data["problems"]:
        table.add_row(f"{r['level']}/{r['file']}", _ms(r["baseline_ms"]), _ms(r["candidate_mean_ms"]),
                      "-" if r["published_speedup"] is None else f"{r['published_speedup']:.2f}x",
                      "-" if r["live_speedup"] is None else f"{r['live_speedup']:.2f}x")
    console.print(table)
    fp = "  ".join(f"p={k}: {v:.2f}" for k, v in data["fast_p"].items())
    console.print(f"fast_p against the baseline over {data['aligned']} problems it has (KernelBench's way): {fp}",
                  markup=False)
