"""``kforge modal check``: is Modal installed, configured (a token) and reachable? With ``--image``: build
the image and judge known-good candidates end to end on Modal (the first command to run with credentials).

The report goes to stdout (``--json`` for scripts); the verdict to stderr. Exit codes: 0 ready, 2 the
Modal client is not installed, 3 not configured or not reachable (offline, a firewall, a rejected
token). Nothing here imports Modal until the command runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import click

EXPECTED_MINOR = "1.6"  # kforge depends on modal~=1.6.0: breaking changes land in 1.Y.0 releases
EXIT_OK, EXIT_NOT_INSTALLED, EXIT_NOT_READY = 0, 2, 3


def check_modal(timeout_s: float = 10.0) -> tuple[int, dict[str, Any]]:
    """(exit code, report). Talks to Modal's server only to say hello, bounded by ``timeout_s``."""
    report: dict[str, Any] = {"installed": False, "version": None, "configured": False, "reachable": False}
    if importlib.util.find_spec("modal") is None:
        report["message"] = "the Modal client is not installed: pip install 'modal~=1.6.0'"
        return EXIT_NOT_INSTALLED, report
    from importlib.metadata import PackageNotFoundError, version

    try:
        report["version"] = version("modal")
    except PackageNotFoundError:
        report["version"] = None
    report["installed"] = True
    if report["version"] and not str(report["version"]).startswith(EXPECTED_MINOR + "."):
        report["warning"] = f"kforge is tested with modal~={EXPECTED_MINOR}.0; this is {report['version']}"

    try:
        import modal
        from modal.config import config, user_config_path
    except Exception as exc:  # noqa: BLE001 - a broken install or a malformed ~/.modal.toml
        report["message"] = f"the Modal client failed to load its configuration: {type(exc).__name__}: {exc}"
        return EXIT_NOT_READY, report

    def setting(key: str) -> Any:
        try:
            return config.get(key)
        except Exception:  # noqa: BLE001 - a key this client version does not know
            return None

    token = bool(setting("token_id") and setting("token_secret"))
    oauth = bool(setting("oauth_refresh_token"))
    report["server_url"] = setting("server_url")
    report["profile"] = getattr(modal.config, "_profile", None)
    if token or oauth:
        from_env = os.environ.get("MODAL_TOKEN_ID") or os.environ.get("MODAL_OAUTH_REFRESH_TOKEN")
        report["configured"] = True
        report["credentials_from"] = "environment" if from_env else str(user_config_path)
    else:
        report["message"] = ("Modal is not configured: no token in MODAL_TOKEN_ID/MODAL_TOKEN_SECRET or "
                             f"{user_config_path}. Run `modal token new` (creates an account token), then check again.")
        return EXIT_NOT_READY, report

    # Hello in a daemon thread: the client retries with backoff for about a minute when it can't connect,
    # and a check must answer in timeout_s whatever the network does.
    outcome: dict[str, Any] = {}

    def hello() -> None:
        try:
            client = modal.Client.from_env()
            client.hello()
            outcome["ok"] = True
        except BaseException as exc:  # noqa: BLE001 - reported, whatever it is
            outcome["error"] = exc

    worker = threading.Thread(target=hello, name="kforge-modal-check", daemon=True)
    worker.start()
    worker.join(timeout_s)
    server = report.get("server_url") or "Modal's server"
    if outcome.get("ok"):
        report["reachable"] = True
        report["message"] = "Modal is installed, configured and reachable: the modal executor can run"
        return EXIT_OK, report
    error = outcome.get("error")
    if error is None:
        report["message"] = (f"Modal is configured but {server} did not answer within {timeout_s:g} s: this machine "
                             "looks offline (or a proxy/firewall blocks it). The modal executor needs network access "
                             "to Modal; `kforge run --dry-run` still prints the plan offline.")
    elif type(error).__name__ == "AuthError":
        report["message"] = f"Modal rejected the credentials ({error}). Run `modal token new` to make a new token."
    else:
        report["message"] = (f"could not reach {server}: {type(error).__name__}: {error}. This machine looks offline "
                             "(or a proxy/firewall blocks it); the modal executor needs network access to Modal.")
    return EXIT_NOT_READY, report


def image_requests(backends: tuple[str, ...] = ("triton", "cuda")) -> list[Any]:
    """The known-good candidates ``--image`` judges: the relu problem's shipped solutions (the CUDA one goes
    through the CPU build tier: nvcc, ninja, the Volume), at the small shape, with a short timing."""
    from kforge.problems import builtin_problems
    from kforge.runtime import protocol as P

    relu = {p.id: p for p in builtin_problems()}["relu"]
    solutions = relu.solutions()
    return [P.EvalRequest(request_id=f"modal-check-{b}", problem_id=relu.id, problem_source=relu.source,
                          candidate_source=solutions[b].read_text(), backend=b, shape_name="small",
                          shape=relu.shape("small"), dtype=relu.dtype, trials=2, min_samples=5, max_samples=20,
                          max_timing_s=2.0, compile_timeout_s=600, run_timeout_s=60)
            for b in backends if b in solutions]


def check_image(options: dict[str, Any], log_dir: Path, bind: Any = None,
                backends: tuple[str, ...] = ("triton", "cuda")) -> tuple[int, dict[str, Any]]:
    """Start the modal executor (building the image, its output streamed and kept in ``log_dir``), judge
    :func:`image_requests` and report. ``bind(executor)`` may bind doubles instead of starting the App."""
    import asyncio

    from kforge.executors.modal import ModalExecutor
    from kforge.runtime import protocol as P

    executor = ModalExecutor(**{**options, "detach": False})
    if bind is not None:
        bind(executor)
    report: dict[str, Any] = {"log": str(log_dir / "modal.log"), "candidates": []}

    async def go() -> list[Any]:
        await executor.start(log_dir)
        try:
            return list(await asyncio.gather(*(executor.evaluate(r) for r in image_requests(backends))))
        finally:
            await executor.shutdown()

    try:
        results = asyncio.run(go())
    except Exception as exc:  # noqa: BLE001 - the image did not build or the App did not start
        report["message"] = f"{exc}"
        return EXIT_NOT_READY, report
    for res in results:
        report["candidates"].append({
            "backend": res.request_id.rsplit("-", 1)[-1], "status": res.status, "device": res.device,
            "error": (res.error or "")[:600] or None, "transport": (res.versions.get("transport") or {}).get("mode"),
            "installed": (res.versions.get("image") or {}).get("installed"), "flags": res.flags,
            "seconds": res.durations_s.get("total")})
    bad = [c for c in report["candidates"] if c["status"] != P.CORRECT]
    if bad:
        report["message"] = ("known-good candidates did not pass on Modal: "
                             + "; ".join(f"{c['backend']}: {c['status']} {c['error'] or ''}".strip() for c in bad)
                             + f" (Modal's output: {report['log']})")
        return EXIT_NOT_READY, report
    report["message"] = (f"the image builds and {len(results)} known-good candidates passed on "
                         f"{results[0].device if results else '?'}: the modal executor is ready")
    return EXIT_OK, report


@click.group("modal")
def modal_group() -> None:
    """Modal: check the setup the modal executor needs."""


@modal_group.command("check")
@click.option("--timeout", "timeout_s", type=float, default=10.0, show_default=True,
              help="Seconds to wait for Modal's server to answer.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--image", "image", is_flag=True,
              help="Also build the image and judge known-good Triton and CUDA candidates on Modal (costs a few cents).")
@click.option("--recipe", "recipe_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="With --image: take the [executor] table (GPU, image pins) from this recipe.")
@click.option("--log-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/modal-check"),
              show_default=True, help="With --image: where Modal's output (the image build's log) is kept.")
@click.option("--quiet", is_flag=True, help="With --image: don't stream Modal's output (it is still logged).")
def check(timeout_s: float, as_json: bool, image: bool, recipe_path: Path | None, log_dir: Path, quiet: bool) -> None:
    """Say whether Modal is installed, configured (a token) and reachable from here; with --image, whether
    the image builds and judges known-good candidates end to end."""
    code, report = check_modal(timeout_s)
    if image and code == EXIT_OK:
        options: dict[str, Any] = {}
        if recipe_path is not None:
            from kforge.options import RecipeError
            from kforge.recipe import load_recipe

            try:
                table = dict(load_recipe(recipe_path).tables["executor"])
            except RecipeError as exc:
                click.echo(f"Error: {exc}", err=True)
                sys.exit(2)
            if table.pop("name", "modal") != "modal":
                click.echo(f"Error: {recipe_path} does not use the modal executor", err=True)
                sys.exit(2)
            options = {k: v for k, v in table.items() if v is not None}
        if quiet:
            options["quiet"] = True
        log_dir.mkdir(parents=True, exist_ok=True)
        code, report["image"] = check_image(options, log_dir)
        report["message"] = report["image"]["message"]
    if as_json:
        click.echo(json.dumps(report))
    else:
        def yes_no(flag: bool) -> str:
            return "yes" if flag else "no"

        click.echo(f"installed:  {yes_no(report['installed'])}"
                   + (f" (modal {report['version']})" if report.get("version") else ""))
        if report["installed"]:
            where = f" (credentials from {report['credentials_from']})" if report.get("credentials_from") else ""
            click.echo(f"configured: {yes_no(report['configured'])}{where}")
        if report["configured"]:
            click.echo(f"reachable:  {yes_no(report['reachable'])} ({report.get('server_url')})")
        for cand in (report.get("image") or {}).get("candidates", []):
            click.echo(f"{cand['backend'] + ':':11} {cand['status']} on {cand['device']} "
                       f"(transport {cand['transport']}, {cand['seconds']} s)")
        if report.get("warning"):
            click.echo(f"warning: {report['warning']}", err=True)
    click.echo(("" if code == EXIT_OK else "Error: ") + report["message"], err=True)
    sys.stdout.flush()
    sys.exit(code)
