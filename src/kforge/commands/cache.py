"""``kforge cache``: the compile stage's build cache (list, show where it is, remove entries).

Entries are keyed by a content hash of the candidate's source, backend, CUDA arch and the versions of
torch, CUDA and Python (see ``kforge.runtime.build``). Removing one entry never touches the others; a
run rebuilds whatever it needs that is missing.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import click


def _root(cache_dir: Path | None) -> Path:
    from kforge.runtime.build import default_root

    return cache_dir.expanduser() if cache_dir else default_root()


_dir_option = click.option("--dir", "cache_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                           help="The cache directory (default: $KFORGE_CACHE_DIR, else ~/.cache/kforge/build).")


@click.group("cache")
def cache_group() -> None:
    """The build cache of compiled C++/CUDA extensions."""


@cache_group.command("path")
@_dir_option
def cache_path(cache_dir: Path | None) -> None:
    """Print the cache directory."""
    click.echo(str(_root(cache_dir)))


@cache_group.command("list")
@_dir_option
@click.option("--json", "as_json", is_flag=True)
def cache_list(cache_dir: Path | None, as_json: bool) -> None:
    """List entries: key, state (ok, error = a cached compile error, corrupt), size, extensions."""
    from kforge.runtime.build import list_entries

    rows = list_entries(_root(cache_dir))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"(empty: {_root(cache_dir)})")
        return
    total = 0
    for r in rows:
        total += r["bytes"]
        age = f"{(time.time() - r['created']) / 3600:.1f} h ago" if r.get("created") else ""
        why = f"  ({r['why']})" if r["why"] else ""
        click.echo(f"{r['key']}  {r['state']:<7} {r['bytes'] / 2**20:7.1f} MiB  {age:>12}  "
                   f"{','.join(r['extensions'] or [])}{why}")
    click.echo(f"{len(rows)} entries, {total / 2**20:.1f} MiB in {_root(cache_dir)}")


@cache_group.command("rm")
@click.argument("keys", nargs=-1, required=True)
@_dir_option
def cache_rm(keys: tuple[str, ...], cache_dir: Path | None) -> None:
    """Remove the entries KEYS (each a full key from `kforge cache list`); the others are untouched."""
    from kforge.runtime.build import remove_entry

    root, missing = _root(cache_dir), []
    for key in keys:
        try:
            if not remove_entry(root, key):
                missing.append(key)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
    if missing:
        raise click.ClickException(f"no such entries: {', '.join(missing)} (see `kforge cache list`)")
    click.echo(f"removed {len(keys)} entr{'y' if len(keys) == 1 else 'ies'}")


@cache_group.command("clear")
@_dir_option
@click.option("--yes", is_flag=True, help="Do not ask.")
def cache_clear(cache_dir: Path | None, yes: bool) -> None:
    """Remove the whole cache."""
    root = _root(cache_dir)
    if not root.exists():
        click.echo("(nothing to clear)")
        return
    if not yes:
        click.confirm(f"remove {root}?", abort=True)
    shutil.rmtree(root)
    click.echo(f"removed {root}")
