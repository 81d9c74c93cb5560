"""The ``kforge`` command line. Data to stdout, progress and logs to stderr.

Exit codes: 0 done (at least one correct candidate), 1 finished but nothing passed, 2 bad usage or
recipe, 3 infrastructure failure, 130 interrupted.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

import click

from kforge import __version__

EXIT_OK, EXIT_NONE_PASSED, EXIT_USAGE, EXIT_INFRA, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _stderr_console() -> Any:
    from rich.console import Console

    console = Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")) or None, highlight=False,
                      soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 120  # logs and CI: wide enough for the table, no terminal to ask
    return console


def _stdout_console() -> Any:
    """Where a command's answer goes (data: stdout), with the same settings as the stderr console."""
    from rich.console import Console

    console = Console(no_color=bool(os.environ.get("NO_COLOR")) or None, highlight=False, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 120
    return console


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def _evaluator_error() -> type[Exception]:
    from kforge.evaluator import EvaluatorError

    return EvaluatorError


def _guard(fn: Any) -> Any:
    """Turn known errors into a one-paragraph message and the right exit code (no traceback)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:  # noqa: C901
        from kforge.engine import InfrastructureError
        from kforge.options import RecipeError
        from kforge.plugins import PluginError

        try:
            return fn(*args, **kwargs)
        except RecipeError as exc:
            _fail(str(exc), EXIT_USAGE)
        except PluginError as exc:
            _fail(str(exc), EXIT_USAGE)
        except InfrastructureError as exc:
            _fail(str(exc), EXIT_INFRA)
        except _evaluator_error() as exc:
            _fail(str(exc), EXIT_INFRA)
        except sqlite3.DatabaseError as exc:  # a kforge.db that is not one (or is damaged)
            _fail(f"a run's kforge.db could not be read: {exc}. It is not a kforge database, or it is "
                  "damaged: point at a run directory that kforge wrote.", EXIT_USAGE)
        except UnicodeDecodeError as exc:
            _fail(f"a file is not UTF-8 text ({exc.reason} at offset {exc.start}): is it the right file?",
                  EXIT_USAGE)
        except OSError as exc:  # a path that cannot be created, read or written
            where = f" {exc.filename}" if exc.filename else ""
            _fail(f"cannot use{where}: {exc.strerror or exc}", EXIT_USAGE)

    wrapper._kforge_guarded = True  # type: ignore[attr-defined]
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kforge")
def cli() -> None:
    """kforge: generate, judge and search GPU kernels with LLMs."""


# -- run ------------------------------------------------------------------------------------------
@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a recipe value, e.g. --set eval.trials=7 (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per event on stdout.")
@click.option("--dry-run", is_flag=True, help="Print the resolved plan and exit.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write the run here (a new or empty folder) instead of a new folder under [run] out.")
@click.option("--tui", is_flag=True, help="Watch the run in the dashboard.")
@_guard
def run(recipe: Path, overrides: tuple[str, ...], as_json: bool, dry_run: bool, run_dir: Path | None,
        tui: bool) -> None:
    """Run RECIPE: generate candidates, judge them, stream a live speedup table."""
    from kforge.engine import Engine
    from kforge.options import RecipeError
    from kforge.recipe import load_recipe

    if tui:
        _tui_needs_a_terminal()
    with _json_error(as_json):
        rec = load_recipe(recipe, list(overrides))
        try:
            engine = Engine(rec, run_dir=run_dir)
        except RecipeError as exc:  # raised while building plugins and problems: still name the file
            raise RecipeError(f"{recipe}: {exc}", mistakes=[f"{recipe}: {p}" for p in exc.mistakes]) from None
    for warning in engine.warnings:
        click.echo(f"warning: {warning}", err=True)
    if dry_run:
        plan = engine.plan()
        if as_json:
            click.echo(json.dumps({"event": "plan", **plan}, default=str))
        else:
            _print_plan(plan)
        return
    if tui:
        if as_json:
            raise RecipeError("--tui and --json don't go together: the dashboard reads the run's store")
        from kforge.commands.tui import run_tui

        sys.exit(run_tui(recipe, overrides=overrides, extra_args=["--run-dir", str(run_dir)] if run_dir else []))
    sys.exit(_execute(engine, as_json))


def _tui_needs_a_terminal() -> None:
    from kforge.commands.tui import no_terminal
    from kforge.options import RecipeError

    problem = no_terminal()
    if problem:
        raise RecipeError(f"--tui: {problem}")


def _json_error(as_json: bool) -> Any:
    """With --json, a run refused before it started still ends its stream: one ``error`` event."""
    import contextlib

    from kforge.options import RecipeError

    @contextlib.contextmanager
    def guard() -> Any:
        try:
            yield
        except RecipeError as exc:
            if as_json:
                click.echo(json.dumps({"event": "error", "reason": "usage", "message": str(exc),
                                       "mistakes": exc.mistakes}))
            raise

    return guard()


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per event on stdout.")
@_guard
def resume(run_dir: Path, as_json: bool) -> None:
    """Continue a run that was interrupted or killed, from its store.

    Finished results are kept, unfinished evaluations and generations are redone, the search's
    state and the budgets continue from where they were."""
    from kforge.engine import Engine
    from kforge.options import RecipeError
    from kforge.recipe import validate
    from kforge.store import DB_NAME, RunReader

    if not (run_dir / DB_NAME).is_file():
        raise RecipeError(f"{run_dir} is not a kforge run directory (no {DB_NAME})")
    with RunReader(run_dir) as reader:  # a kforge.db that is not a database stops here, before anything starts
        reader.get_meta("status")
    try:
        tables = json.loads((run_dir / "recipe.json").read_text())
    except (OSError, ValueError) as exc:
        raise RecipeError(f"{run_dir}/recipe.json is missing or unreadable: {exc}") from exc
    with _json_error(as_json):
        engine = Engine(validate(tables, None), run_dir=run_dir, resume=True)
    sys.exit(_execute(engine, as_json))


def _print_plan(plan: dict[str, Any]) -> None:
    from rich.pretty import Pretty

    console = _stdout_console()  # the dry run's answer: data, on stdout
    console.print("[bold]Plan[/] (dry run: nothing was started)")
    for key, value in plan.items():
        console.print(f"[bold]{key}[/]:", Pretty(value))


def _interrupt_handler(engine: Any, console: Any) -> Any:
    """Ctrl-C: the first stops the run cleanly; the second exits at once, still naming the run
    directory (what ``kforge resume`` needs)."""
    interrupts = {"n": 0}

    def on_sigint() -> None:
        interrupts["n"] += 1
        if interrupts["n"] == 1:
            console.print("[yellow]Interrupted: stopping cleanly, everything recorded is kept "
                          "(Ctrl-C again to force).[/]")
            engine.request_stop("interrupted")
        else:
            sys.stderr.write(f"\nforced stop: the run is in {engine.run_dir} "
                             f"(continue it with kforge resume {engine.run_dir})\n")
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)

    return on_sigint


def _execute(engine: Any, as_json: bool) -> int:
    from kforge.output import JsonLines, LiveTable, PlainLines, print_summary

    console = _stderr_console()
    if as_json:
        engine.bus.subscribe(JsonLines())
    live = None
    resumed_from = engine.run_dir if engine.resume else None  # the table starts from what the store holds
    title, total = f"kforge: {engine.recipe.name}", engine.recipe.tables["budget"].get("candidates")
    if not as_json and console.is_terminal:
        live = LiveTable(engine.problem_ids, console, title, resumed_from, total=total)
        engine.bus.subscribe(live)
    elif not as_json:
        engine.bus.subscribe(PlainLines(console, engine.problem_ids, title, resumed_from, total=total))

    on_sigint = _interrupt_handler(engine, console)

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGINT, on_sigint)
        except (NotImplementedError, RuntimeError):
            pass
        return await engine.run()

    if live is not None:
        with live:
            summary = asyncio.run(main())
    else:
        summary = asyncio.run(main())
    if not as_json:  # the run's answer is data: stdout (the live progress stayed on stderr)
        print_summary(_stdout_console(), summary)
    if engine.stop_reason == "interrupted":
        return EXIT_INTERRUPTED
    if summary["correct"] == 0 and engine.broken_problems:  # bad input, not a run that found nothing
        for pid, why in engine.broken_problems.items():
            _stderr_console().print(f"Error: problem {pid}: {why}", markup=False)
        return EXIT_USAGE
    return EXIT_OK if summary["correct"] > 0 else EXIT_NONE_PASSED


# -- eval -----------------------------------------------------------------------------------------
@cli.command("eval")
@click.argument("candidate", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--problem", "problem_ref", required=True, help="A built-in problem id or a KernelBench-format file.")
@click.option("--backend", default="triton", show_default=True, help="The candidate's backend.")
@click.option("--shape", type=click.Choice(["auto", "small", "main"]), default="auto", show_default=True)
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="eval.KEY=VALUE", help="Override an [eval] setting.")
@click.option("--json", "as_json", is_flag=True, help="Print the EvalResult as one JSON object on stdout.")
@_guard
def eval_cmd(candidate: Path, problem_ref: str, backend: str, shape: str, device: str,
             overrides: tuple[str, ...], as_json: bool) -> None:
    """Judge one CANDIDATE file against a problem and print its result."""
    from kforge.api import code_hash
    from kforge.engine import InfrastructureError
    from kforge.evaluator import Evaluator, EvaluatorError
    from kforge.options import RecipeError, read_text
    from kforge.recipe import apply_override
    from kforge.runtime import protocol as P

    raw: dict[str, Any] = {}
    for o in overrides:
        apply_override(raw, o)
    if set(raw) - {"eval"}:
        raise RecipeError("kforge eval only takes --set eval.KEY=VALUE")
    code = read_text(candidate, "candidate file")
    evaluator = Evaluator("local", executor_options={"device": device, "workers": 1})
    try:
        with evaluator:
            result = evaluator.evaluate(problem_ref, code, backend=backend, shape=shape, request_id=code_hash(code),
                                        **raw.get("eval", {}))
    except EvaluatorError as exc:
        raise InfrastructureError(str(exc)) from exc
    if result.status == P.INFRA_ERROR and result.guard == "reference":  # the problem's fault: bad input
        ref_path = Path(problem_ref)
        where = f"problem file {ref_path}" if ref_path.suffix == ".py" or ref_path.is_file() else f"problem {problem_ref}"
        raise RecipeError(f"{where}: {result.error}; the candidate was not judged")
    if as_json:
        click.echo(json.dumps(result.to_dict(), default=str))
    else:
        _print_result(result, _stdout_console())
    if result.status == P.INFRA_ERROR:
        sys.exit(EXIT_INFRA)
    sys.exit(EXIT_OK if result.status == P.CORRECT else EXIT_NONE_PASSED)


# -- serve ----------------------------------------------------------------------------------------
@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback needs --token.")
@click.option("--port", default=8765, show_default=True, type=int, help="Port (0: any free port).")
@click.option("--token", "tokens", multiple=True, envvar="KFORGE_SERVE_TOKEN",
              help="Accepted bearer token (repeatable; env KFORGE_SERVE_TOKEN, comma-separated).")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=Path("kforge-serve.db"),
              show_default=True, help="The SQLite job queue: accepted jobs survive a crash or restart.")
@click.option("--executor", "executor_name", default="local", show_default=True,
              help="'local' (GPUs, else the CPU), 'cpu', 'modal' or an installed executor.")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True,
              help="For the local executor.")
@click.option("--workers", type=int, default=None, help="Judges on the CPU (local executor; default 1).")
@click.option("--problems", "problem_source", default=None,
              help="A KernelBench-format file or directory whose problem ids are served beside the built-ins.")
@click.option("--set", "overrides", multiple=True, metavar="TABLE.KEY=VALUE",
              help="eval.KEY=VALUE: a default [eval] setting for every job (a job's own settings win); "
                   "executor.KEY=VALUE: an executor option (kforge plugins lists them).")
@click.option("--max-body-bytes", type=int, default=8 << 20, show_default=True)
@click.option("--max-code-bytes", type=int, default=256 << 10, show_default=True)
@click.option("--max-batch", type=int, default=512, show_default=True, help="Most jobs in one batch.")
@click.option("--max-pending-per-token", type=int, default=1024, show_default=True,
              help="Most jobs queued or running per token; more is answered 429 with Retry-After.")
@click.option("--max-queue", type=int, default=10000, show_default=True,
              help="Most jobs queued or running in all; more is answered 503 with Retry-After.")
@click.option("--no-inline-problems", is_flag=True, help="Accept only problem ids, not problem sources.")
@click.option("--log-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the judges write their logs.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON line with the URL once listening.")
@_guard
def serve_cmd(host: str, port: int, tokens: tuple[str, ...], db: Path, executor_name: str, device: str,
              workers: int | None, problem_source: str | None, overrides: tuple[str, ...], max_body_bytes: int,
              max_code_bytes: int, max_batch: int, max_pending_per_token: int, max_queue: int,
              no_inline_problems: bool, log_dir: Path | None, as_json: bool) -> None:
    """Serve the judge over HTTP: a reward service for training loops on other machines.

    Submit one evaluation or a batch (with an idempotency key), fetch or stream results (server-sent
    events), cancel, and watch /v1/health and /metrics. Accepted jobs persist in a SQLite queue.
    The Python API (kforge.evaluator.Evaluator), the client (kforge.client) and the RL adapters
    (plugins/kforge-rl) are documented with a GRPO example in docs/service.md.
    """
    from kforge.options import RecipeError
    from kforge.recipe import apply_override
    from kforge.serve import run_server
    from kforge.serve.app import Limits

    raw: dict[str, Any] = {}
    for o in overrides:
        apply_override(raw, o)
    if set(raw) - {"eval", "executor"}:
        raise RecipeError("kforge serve only takes --set eval.KEY=VALUE and --set executor.KEY=VALUE")
    options: dict[str, Any] = dict(raw.get("executor", {}))
    if executor_name == "local":
        options.setdefault("device", device)
    if workers is not None:
        options["workers"] = workers
    all_tokens = [t.strip() for value in tokens for t in value.split(",") if t.strip()]
    code = run_server(host=host, port=port, db=db, tokens=all_tokens, as_json=as_json,
                      evaluator_kwargs={"executor": executor_name, "executor_options": options,
                                        "problems": problem_source, "log_dir": log_dir,
                                        "eval_defaults": raw.get("eval", {})},
                      limits=Limits(max_body_bytes=max_body_bytes, max_code_bytes=max_code_bytes,
                                    max_batch=max_batch, max_pending_per_token=max_pending_per_token,
                                    max_queue=max_queue, inline_problems=not no_inline_problems))
    sys.exit(code)


def _print_result(result: Any, console: Any) -> None:
    from kforge import fmt
    from kforge.output import STATUS_STYLE

    style = STATUS_STYLE.get(result.status, "")
    console.print(f"[{style}]{result.status}[/] on {result.device} (shape: {result.shape_name})")
    if result.error:
        console.print(f"  [{result.guard}] {result.error}" if result.guard else f"  {result.error}", markup=False)
    if result.timing:
        base = result.baseline_eager or {}
        console.print(f"  candidate {fmt.ms(result.timing['median_ms'])} ms (p20 {fmt.ms(result.timing['p20_ms'])}, "
                      f"p80 {fmt.ms(result.timing['p80_ms'])}, n={result.timing['n']}), eager "
                      f"{fmt.ms(base.get('median_ms'))} ms: speedup {fmt.speedup(result.speedup_vs_eager)}")
        console.print(f"  timing: {result.timing_method}", markup=False)
    if result.log_tail:
        console.print("  candidate output (tail):", markup=False)
        console.print(result.log_tail[-1500:], markup=False)


# -- plugins --------------------------------------------------------------------------------------
@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@_guard
def plugins(as_json: bool) -> None:
    """List every plugin with its version and what it registers."""
    from kforge.plugins import SINGULAR, describe_plugins, get_registry

    info = describe_plugins(get_registry())
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for p in info:
        tag = "built-in" if p["builtin"] else "plugin"
        click.echo(f"{p['name']} {p['version'] or ''} ({tag})")
        for kind, items in p["registers"].items():
            for item in items:
                click.echo(f"  {SINGULAR[kind]}: {item['name']} - {item['description']}")
                for opt in item["options"]:
                    default = "" if opt["default"] is None else f" (default {opt['default']!r})"
                    click.echo(f"      {opt['name']}: {opt['type']}{default} {opt['help']}")


# -- problems -------------------------------------------------------------------------------------
@cli.group()
def problems() -> None:
    """List, show and check problems."""


@problems.command("list")
@click.option("--source", default="builtin", show_default=True, help="'builtin' or a KernelBench file/directory.")
@click.option("--json", "as_json", is_flag=True)
@_guard
def problems_list(source: str, as_json: bool) -> None:
    """List problems (id, level, name, shapes)."""
    probs = _load_source(source)
    if as_json:
        click.echo(json.dumps([p.summary() | {"source_code": None} for p in probs], indent=2))
        return
    for p in probs:
        shapes = ", ".join(k for k in p.shapes if p.shapes[k])
        click.echo(f"{p.id:<24} L{p.level if p.level is not None else '?'}  {p.name:<40} shapes: {shapes or 'main'}"
                   + ("  (needs a model download)" if p.needs_download else ""))


@problems.command("show")
@click.argument("problem_id")
@click.option("--source", default="builtin", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--device", "device_name", default=None,
              help="GPU name for the roofline floor (default: this machine's first GPU, from nvidia-smi).")
@_guard
def problems_show(problem_id: str, source: str, as_json: bool, device_name: str | None) -> None:
    """Show one problem: metadata, shapes, FLOP and byte counts, roofline floor, and its source."""
    from kforge.executors.local import gpu_names
    from kforge.problems import select
    from kforge.runtime.meta import roofline_floor_ms

    (p,) = select(_load_source(source), [problem_id], None)
    gpu = device_name or next(iter(gpu_names()), None)
    info = {"device_kind": "cuda", "device": gpu} if gpu else {}
    shapes = {name: {"values": p.shape(name), "flops": p.flops_at(name), "bytes": p.bytes_at(name),
                     "roofline_floor_ms": roofline_floor_ms(info, p.flops_at(name), p.bytes_at(name), p.dtype)}
              for name in ("main", "small") if p.has_shape(name)}
    data = p.summary() | {"shape_detail": shapes, "solutions": {k: str(v) for k, v in p.solutions().items()},
                          "source_code": p.source}
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    click.echo(f"{p.id}: {p.name} (level {p.level}, {p.dtype})")
    for name, d in shapes.items():
        flops = f"{d['flops']:.3g}" if d["flops"] else "?"
        nbytes = f"{d['bytes']:.3g}" if d["bytes"] else "?"
        floor = (f", roofline floor {d['roofline_floor_ms']:.4f} ms on {gpu} (datasheet)"
                 if d["roofline_floor_ms"] else "")
        click.echo(f"  {name}: {d['values']}  FLOPs {flops}, bytes {nbytes}{floor}")
    if not gpu:
        click.echo("  (no GPU here: pass --device 'NVIDIA H100 80GB HBM3' to see the roofline floor on one)")
    for i, h in enumerate(p.shapes.get("heldout") or []):
        click.echo(f"  heldout:{i}: {h}")
    if data["solutions"]:
        click.echo(f"  example solutions: {', '.join(data['solutions'])}")
    click.echo("")
    click.echo(p.source)


def _load_source(source: str) -> list[Any]:
    from kforge.problems import builtin_problems, load_problem_path

    return builtin_problems() if source == "builtin" else load_problem_path(Path(source))


def _add_builtin_commands() -> None:
    from kforge.commands import prompt_cmd
    from kforge.commands.cache import cache_group
    from kforge.commands.check import check_cmd
    from kforge.commands.modal import modal_group
    from kforge.commands.report import compare_cmd, report_cmd
    from kforge.commands.tui import tui_cmd

    for cmd in (prompt_cmd, cache_group, modal_group, tui_cmd, report_cmd, compare_cmd):
        _guard_all(cmd)
        cli.add_command(cmd)
    _guard_all(check_cmd)
    problems.add_command(check_cmd)  # kforge problems check


def _guard_all(cmd: click.Command) -> None:
    """Every command gets the same treatment of known errors: a clear message and exit code."""
    if cmd.callback is not None and not getattr(cmd.callback, "_kforge_guarded", False):
        cmd.callback = _guard(cmd.callback)
    for sub in getattr(cmd, "commands", {}).values():
        _guard_all(sub)


_add_builtin_commands()


def _add_plugin_commands() -> None:
    try:
        from kforge.plugins import get_registry

        get_registry().pm.hook.register_commands(cli=cli)
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not break --help
        click.echo(f"warning: plugin commands not loaded: {exc}", err=True)


def main() -> None:
    _add_plugin_commands()
    cli(prog_name="kforge")
