"""``kforge modal check``: is Modal installed, configured (a token) and reachable?

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


@click.group("modal")
def modal_group() -> None:
    """Modal: check the setup the modal executor needs."""


@modal_group.command("check")
@click.option("--timeout", "timeout_s", type=float, default=10.0, show_default=True,
              help="Seconds to wait for Modal's server to answer.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def check(timeout_s: float, as_json: bool) -> None:
    """Say whether Modal is installed, configured (a token) and reachable from here."""
    code, report = check_modal(timeout_s)
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
        if report.get("warning"):
            click.echo(f"warning: {report['warning']}", err=True)
    click.echo(("" if code == EXIT_OK else "Error: ") + report["message"], err=True)
    sys.stdout.flush()
    sys.exit(code)
