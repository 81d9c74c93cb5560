"""The compile stage: build a candidate's C++/CUDA extensions ahead of timing, into a content-hash cache.

A CUDA or CUTLASS candidate compiles at import time with ``torch.utils.cpp_extension.load_inline``,
which takes tens of seconds of CPU. Done inside the sandbox, that time would hold a GPU idle. The
executor instead runs ``python -m kforge.runtime.build`` in a pool of CPU processes (no GPU visible)
while the GPUs time other candidates, at a lower CPU priority (``lower_priority``). The build process imports the candidate with
``TORCH_EXTENSIONS_DIR`` pointing at a cache entry; torch writes the sources, ``build.ninja`` and the
``.so`` there. The sandbox later imports the same candidate with the same ``TORCH_EXTENSIONS_DIR`` and
``TORCH_CUDA_ARCH_LIST``: torch regenerates identical files, ninja finds nothing to do, and the import
only loads the library.

Cache layout (``KFORGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/kforge/build``)::

    <root>/<key>/ext/...          what torch built (one directory per extension name)
    <root>/<key>/manifest.json    written last: status, versions, every file's size and the .so hashes
    <root>/<key>.lock             held while building (several runs may share one cache)

The key hashes everything the build depends on: the source, the backend, the arch, the versions of
torch, CUDA and Python, and this module's BUILD_VERSION. An entry without a manifest (a build that was
killed), or whose files no longer match it (a truncated ``.so``), is corrupt: it is removed and rebuilt.
Deterministic compile errors are cached too (a duplicate candidate is not rebuilt to fail again);
timeouts are not.

Everything above ``_run_build`` uses the standard library only, so the orchestrator can manage the
cache without importing torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

BUILD_VERSION = "kforge-build/1"
BUILD_NICE_ENV = "KFORGE_BUILD_NICE"
MANIFEST = "manifest.json"
# Candidates whose import compiles C++/CUDA (what the compile stage can do ahead of time).
_BUILD_CALL = re.compile(r"\b(load_inline|cpp_extension\s*\.\s*load|load)\s*\(")
_CPP_EXT = re.compile(r"cpp_extension")


def needs_build(source: str) -> bool:
    """Whether importing ``source`` compiles an extension (load_inline / cpp_extension.load)."""
    return bool(_CPP_EXT.search(source) and _BUILD_CALL.search(source))


def default_root() -> Path:
    env = os.environ.get("KFORGE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kforge" / "build"


def cache_key(source: str, backend: str, arch: str | None, versions: dict[str, Any]) -> str:
    """Content hash of everything a build's output depends on."""
    ident = {"build": BUILD_VERSION, "source": source, "backend": backend, "arch": arch or "",
             "torch": versions.get("torch"), "cuda": versions.get("cuda"), "python": versions.get("python"),
             "platform": versions.get("platform")}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tracked(ext_dir: Path) -> list[Path]:
    """Files a manifest vouches for: what torch generated and built, not ninja's logs or locks."""
    if not ext_dir.is_dir():
        return []
    skip = {".ninja_log", ".ninja_deps", "lock"}
    return sorted(p for p in ext_dir.rglob("*") if p.is_file() and p.name not in skip)


def write_manifest(entry: Path, status: str, info: dict[str, Any]) -> dict[str, Any]:
    files = {}
    for p in _tracked(entry / "ext"):
        rec: dict[str, Any] = {"size": p.stat().st_size}
        if p.suffix in (".so", ".pyd", ".dll"):
            rec["sha256"] = _sha256(p)
        files[str(p.relative_to(entry))] = rec
    manifest = dict(info, status=status, files=files, created=time.time(), build=BUILD_VERSION)
    tmp = entry / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, entry / MANIFEST)  # atomic: an entry has a manifest only once it is complete
    return manifest


def read_entry(entry: Path) -> tuple[str, dict[str, Any] | None, str]:
    """``(state, manifest, why)``; state is 'ok', 'error' (a cached compile error), 'missing' or 'corrupt'."""
    if not entry.exists():
        return "missing", None, "no entry"
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
    except FileNotFoundError:
        return "corrupt", None, "no manifest (a build that did not finish)"
    except (OSError, ValueError) as exc:
        return "corrupt", None, f"unreadable manifest: {exc}"
    status = manifest.get("status")
    if status not in ("ok", "error"):
        return "corrupt", manifest, f"unknown status {status!r}"
    for rel, rec in (manifest.get("files") or {}).items():
        p = entry / rel
        try:
            size = p.stat().st_size
        except OSError:
            return "corrupt", manifest, f"missing file {rel}"
        if size != rec.get("size"):
            return "corrupt", manifest, f"{rel} is {size} bytes, the manifest says {rec.get('size')}"
        if rec.get("sha256") and _sha256(p) != rec["sha256"]:
            return "corrupt", manifest, f"{rel} does not match its hash"
    if status == "ok" and not any(r.endswith((".so", ".pyd")) for r in manifest.get("files") or {}):
        return "corrupt", manifest, "no built library"
    return status, manifest, ""


def remove_entry(root: Path, key: str) -> bool:
    """Remove one entry (and only it); True if there was one."""
    if not re.fullmatch(r"[0-9a-f]{8,64}", key):
        raise ValueError(f"not a cache key: {key!r}")
    entry = root / key
    existed = entry.exists()
    shutil.rmtree(entry, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        (root / f"{key}.lock").unlink()
    return existed


def list_entries(root: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if not root.is_dir():
        return rows
    for entry in sorted(p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"[0-9a-f]{8,64}", p.name)):
        state, manifest, why = read_entry(entry)
        size = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
        rows.append({"key": entry.name, "state": state, "why": why, "bytes": size,
                     "extensions": (manifest or {}).get("extensions", []),
                     "created": (manifest or {}).get("created"), "seconds": (manifest or {}).get("seconds")})
    return rows


@contextlib.contextmanager
def _locked(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def compile_excerpt(text: str, limit: int = 2500) -> str:
    """The part of a compiler's output a model (or a person) needs: the error lines with some context."""
    lines = [ln.rstrip() for ln in str(text).splitlines() if ln.strip()]
    # Drop the long command lines ninja echoes ([1/3] /usr/local/cuda/bin/nvcc -D... ).
    lines = [ln for ln in lines if not (ln.startswith("[") and len(ln) > 300)]
    hits = [i for i, ln in enumerate(lines) if re.search(r"\berror\b|Error|undefined reference|fatal", ln)]
    keep: list[int] = []
    for i in hits:
        for j in range(max(0, i - 1), min(len(lines), i + 4)):
            if j not in keep:
                keep.append(j)
    out = [lines[i] for i in (keep or range(max(0, len(lines) - 30), len(lines)))]
    text = "\n".join(out)
    return text if len(text) <= limit else text[: limit - 20] + "\n... (truncated)"


def build_in_process(req: dict[str, Any], root: Path, key: str, timeout_s: float) -> dict[str, Any]:
    """Build one candidate now, synchronously: ``python -m kforge.runtime.build`` with no GPU visible, its
    whole process group killed past ``timeout_s`` (the entry is then removed). ``req`` holds ``source``,
    ``entry``, ``arch`` and ``versions``. The outcome, with ``log_tail``. (Modal's CPU build tier; the
    local executor runs the same process from its asyncio pool.)"""
    import signal
    import subprocess
    import tempfile

    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kforge-build-") as work:
        res_file = Path(work) / "result.json"
        req_file = Path(work) / "request.json"
        req_file.write_text(json.dumps({**req, "result": str(res_file)}))
        env = dict(os.environ)
        src_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = src_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["CUDA_VISIBLE_DEVICES"] = ""
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen([sys.executable, "-m", "kforge.runtime.build", str(req_file)],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
            try:
                proc.wait(timeout=timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                timed_out = True
            log.seek(max(0, log.seek(0, os.SEEK_END) - 4000))
            tail = log.read().decode(errors="replace")
        if timed_out:
            remove_entry(root, key)
            return {"status": "timeout", "error": f"the build took longer than compile_timeout_s={timeout_s:g} s "
                    "and was killed", "log_tail": tail}
        try:
            outcome = json.loads(res_file.read_text())
        except (OSError, ValueError):
            return {"status": "nobuild", "error": f"the build process exited with {proc.returncode}",
                    "log_tail": tail}
    outcome.setdefault("log_tail", tail)
    return dict(outcome)


# --------------------------------------------------------------------------------------------------
def _run_build(req: dict[str, Any]) -> dict[str, Any]:
    """In the build process: import the candidate with its extensions directed into the cache entry."""
    entry = Path(req["entry"])
    ext = entry / "ext"
    ext.mkdir(parents=True, exist_ok=True)
    os.environ["TORCH_EXTENSIONS_DIR"] = str(ext)
    if req.get("arch"):
        os.environ["TORCH_CUDA_ARCH_LIST"] = str(req["arch"])
    os.environ.setdefault("MAX_JOBS", str(req.get("max_jobs") or 1))
    import importlib.util
    import traceback

    import torch.utils.cpp_extension as ce

    calls: list[dict[str, Any]] = []

    def wrap(fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            name = kwargs.get("name", args[0] if args else "?")
            t0 = time.perf_counter()
            try:
                out = fn(*args, **kwargs)
            except BaseException as exc:
                calls.append({"name": str(name), "ok": False, "error": f"{type(exc).__name__}: {exc}",
                              "seconds": round(time.perf_counter() - t0, 3)})
                raise
            calls.append({"name": str(name), "ok": True, "seconds": round(time.perf_counter() - t0, 3)})
            return out
        return wrapper

    ce.load_inline = wrap(ce.load_inline)
    ce.load = wrap(ce.load)
    src = entry / "candidate.py"
    src.write_text(req["source"])
    error = None
    try:
        spec = importlib.util.spec_from_file_location("kforge_build_candidate", src)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["kforge_build_candidate"] = module
        spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001 - reported below
        error = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-6000:]
    failed = [c for c in calls if not c["ok"]]
    if failed:
        return {"status": "error", "extensions": [c["name"] for c in calls],
                "error": compile_excerpt(failed[0]["error"]), "full_error": failed[0]["error"][-20000:]}
    if calls:
        # Built. Whatever the module did after its builds (it may touch a GPU this process cannot
        # see) is for the sandbox to judge.
        return {"status": "ok", "extensions": [c["name"] for c in calls], "import_error": error}
    return {"status": "nobuild", "error": error}


def lower_priority() -> int:
    """Builds are background work: they run at a lower CPU priority (``nice`` +KFORGE_BUILD_NICE, default
    10; 0 leaves it), which the compiler processes inherit, so a judge timing plain calls or a sandbox
    answering it is not preempted by the compile pool that fills every other core. The niceness now."""
    try:
        step = int(os.environ.get(BUILD_NICE_ENV) or 10)
    except ValueError:
        step = 10
    try:
        return os.nice(max(step, 0))
    except OSError:
        return os.nice(0)


def main() -> int:
    """``python -m kforge.runtime.build REQUEST.json``: build one candidate; writes RESULT next to it."""
    lower_priority()
    req_path = Path(sys.argv[1])
    req = json.loads(req_path.read_text())
    entry = Path(req["entry"])
    t0 = time.perf_counter()
    with _locked(entry.parent / f"{entry.name}.lock"):
        state, manifest, _ = read_entry(entry)
        if state in ("ok", "error"):  # another process built it while we waited
            out = dict(manifest or {}, cached=True)
        else:
            if state == "corrupt":
                shutil.rmtree(entry, ignore_errors=True)
            entry.mkdir(parents=True, exist_ok=True)
            out = _run_build(req)
            out["seconds"] = round(time.perf_counter() - t0, 3)
            info = {k: out.get(k) for k in ("extensions", "error", "seconds")}
            info.update(key=entry.name, arch=req.get("arch"), versions=req.get("versions", {}))
            if out["status"] == "ok":
                write_manifest(entry, "ok", info)
            elif out["status"] == "error":
                write_manifest(entry, "error", info)
            else:  # nothing was built: leave no entry behind
                shutil.rmtree(entry, ignore_errors=True)
            out["cached"] = False
    Path(req["result"]).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
