"""The replay generator: candidates from files, with no model and no network.

``path`` is a folder holding ``<problem_id>/*.py`` (or ``<problem_id>.py``), or one candidate file
used for every problem. The k-th proposal for a problem gets the k-th file (sorted by name); once a
problem's files are used up the generator has nothing more to offer for it.
"""

from __future__ import annotations

from pathlib import Path

from kforge.api import Generation, Generator, Proposal, RunContext
from kforge.hookspecs import hookimpl
from kforge.options import Option, RecipeError


class ReplayGenerator(Generator):
    name = "replay"
    description = "replays candidate files from a folder (<problem_id>/*.py), no model needed"
    options = (
        Option("path", str, None, "folder of <problem_id>/*.py candidate files, or one candidate file",
               required=True, is_path=True),
        Option("cycle", bool, False, "start again from the first file when a problem's files run out"),
    )

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self.root = Path(str(self.opts.path))
        if not self.root.exists():
            raise RecipeError(f"generator.path {self.root} does not exist")

    def files_for(self, problem_id: str) -> list[Path]:
        if self.root.is_file():
            return [self.root]
        folder = self.root / problem_id
        files = sorted(folder.glob("*.py")) if folder.is_dir() else []
        single = self.root / f"{problem_id}.py"
        if single.is_file():
            files.append(single)
        return files

    async def generate(self, proposals: list[Proposal], ctx: RunContext) -> list[Generation]:
        out = []
        for p in proposals:
            files = self.files_for(p.problem_id)
            index = int(p.params.get("sample", p.step))
            if files and self.opts.cycle:
                index %= len(files)
            if index >= len(files):
                out.append(Generation(p.id, None, self.name, error="no more replay files for this problem",
                                      meta={"exhausted": True}))
                continue
            f = files[index]
            meta: dict[str, object] = {"file": str(f)}
            try:
                data = f.read_bytes()
            except OSError as exc:
                out.append(Generation(p.id, None, self.name, error=f"cannot read {f}: {exc.strerror or exc}"))
                continue
            try:
                code = data.decode("utf-8")
            except UnicodeDecodeError as exc:  # judged as a compile error with the reason, never run
                code = data.decode("utf-8", errors="replace")
                meta["compile_error"] = (f"{f.name} is not UTF-8 text (byte {data[exc.start]:#04x} at offset "
                                         f"{exc.start}): a candidate must be a Python source file")
            out.append(Generation(p.id, code, self.name, model=None, label=f.name, meta=meta))
        return out

    def preflight(self, problem_ids: list[str]) -> tuple[list[str], list[str]]:
        """Before the run: (errors, warnings) about the selected problems' candidate files."""
        if self.root.is_file():
            return [], []
        missing = [pid for pid in problem_ids if not self.files_for(pid)]
        where = f"{self.root}/<problem_id>/*.py or {self.root}/<problem_id>.py"
        if missing and len(missing) == len(problem_ids):
            found = sorted(p.name for p in self.root.iterdir())[:8] if self.root.is_dir() else []
            return [f"generator.path {self.root} has no candidate files for the selected problems "
                    f"({', '.join(missing)}): expected {where}"
                    + (f"; it holds {', '.join(found)}" if found else "; it is empty")], []
        if missing:
            return [], [f"generator.path {self.root} has no candidate files for {', '.join(missing)}: "
                        f"they get no candidates (expected {where})"]
        return [], []


@hookimpl
def register_generators(register):
    register(ReplayGenerator)
