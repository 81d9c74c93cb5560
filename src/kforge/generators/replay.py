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
            out.append(Generation(p.id, f.read_text(), self.name, model=None, label=f.name,
                                  meta={"file": str(f)}))
        return out


@hookimpl
def register_generators(register):
    register(ReplayGenerator)
