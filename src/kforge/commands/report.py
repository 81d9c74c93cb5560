"""``kforge report RUN_DIR`` and ``kforge compare RUN_A RUN_B``.

Data goes to stdout (the comparison table, ``--json`` figures); what was written goes to stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click


def _check_run(path: Path) -> None:
    from kforge.store import is_run_dir

    if not is_run_dir(path):
        click.echo(f"Error: {path} is not a kforge run directory (no kforge.db)", err=True)
        sys.exit(2)


@click.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write the report here (default: RUN_DIR/report).")
@click.option("--json", "as_json", is_flag=True, help="Print the report's figures as one JSON object on stdout.")
@click.option("--baseline", "baseline", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A KernelBench baseline JSON (results/timing/...): also print speedups and fast_p against it.")
def report_cmd(run_dir: Path, out_dir: Path | None, as_json: bool, baseline: Path | None) -> None:
    """Write report.md and a self-contained report.html for RUN_DIR.

    The per-problem table, fast_p against p, the geometric-mean speedup, the correctness rate, best
    speedup over time per problem, the distribution of speedups, tokens, cost and GPU time, and the
    run's provenance. Works on a run that is still going (it reads the store)."""
    from kforge.report import have_matplotlib, public, run_figures, write_report

    _check_run(run_dir)
    published = _published(run_dir, baseline) if baseline is not None else None
    figures = run_figures(run_dir)
    written = write_report(run_dir, out_dir, figures=figures)
    if as_json:
        extra = {"published_baseline": published} if published is not None else {}
        click.echo(json.dumps(public(figures) | {"written": written} | extra, default=str))
    elif published is not None:
        from kforge.commands.check import print_published

        print_published(published)
    click.echo(f"wrote {written['markdown']} and {written['html']}", err=as_json)  # the answer, unless --json is
    if not have_matplotlib():
        click.echo("note: no plots (matplotlib is not installed: pip install 'kforge[report]')", err=True)


def _published(run_dir: Path, baseline: Path) -> dict[str, Any]:
    from kforge.kernelbench import published_speedups
    from kforge.options import RecipeError

    try:
        return published_speedups(run_dir, baseline)
    except RecipeError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)


@click.command("compare")
@click.argument("run_a", type=click.Path(file_okay=False, path_type=Path))
@click.argument("run_b", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as one JSON object on stdout.")
def compare_cmd(run_a: Path, run_b: Path, as_json: bool) -> None:
    """Put two runs side by side on the problems they share."""
    from kforge.report import compare_runs

    _check_run(run_a)
    _check_run(run_b)
    data = compare_runs(run_a, run_b)
    if as_json:
        click.echo(json.dumps(data, default=str))
        return
    _print_comparison(data)


def _print_comparison(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from kforge import fmt

    a, b = data["a"], data["b"]
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = 120
    table = Table(title=f"A: {a['name']} ({Path(a['run_dir']).name})   B: {b['name']} ({Path(b['run_dir']).name})",
                  header_style="bold")
    for col, justify in (("problem", "left"), ("A best", "right"), ("B best", "right"), ("B / A", "right"),
                         ("A correct", "right"), ("B correct", "right"), ("winner", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in data["problems"]:
        note = "" if r["same_problem"] and r["same_shape"] else " (!)"
        table.add_row(r["problem"] + note, fmt.speedup(r["a"]), fmt.speedup(r["b"]),
                      fmt.ratio(r["ratio"]), f"{r['a_correct']}/{r['a_tried']}",
                      f"{r['b_correct']}/{r['b_tried']}", r["winner"])
    console.print(table)
    console.print(f"shared problems: {len(data['shared'])}; wins A {data['wins']['a']}, B {data['wins']['b']}, "
                  f"ties {data['wins']['tie']}")
    for side, name in ((a, "A"), (b, "B")):
        fp = "  ".join(f"p={k}: {fmt.fraction(v)}" for k, v in side["fast_p"].items())
        console.print(f"{name}: geomean {fmt.speedup(side['geomean_speedup'])}, solved {side['solved']}, correctness "
                      f"{fmt.pct(side['correctness_rate'])}, cost ${side['usage']['cost_usd']:.2f}; fast_p {fp}")
    if any(not r["same_problem"] or not r["same_shape"] for r in data["problems"]):
        console.print("(!) the two runs judged a different problem source or shape: their speedups are not comparable")
    if data["only_a"] or data["only_b"]:
        console.print(f"only in A: {', '.join(data['only_a']) or '-'}; only in B: {', '.join(data['only_b']) or '-'}")
