"""The interfaces plugins implement, and the plain data passed between them.

Everything here is importable without torch. Implementations subclass these bases (or duck-type
them) and are registered through the hooks in :mod:`kforge.hookspecs`.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from kforge.options import Option, Options

if TYPE_CHECKING:
    from kforge.problems import Problem
    from kforge.runtime.protocol import EvalRequest, EvalResult


def derive_seed(run_seed: int, component: str, *step: Any) -> int:
    """A 63-bit seed derived from the run seed, the component and the step."""
    text = "/".join([str(run_seed), component, *map(str, step)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def rng_for(run_seed: int, component: str, *step: Any) -> random.Random:
    return random.Random(derive_seed(run_seed, component, *step))


_COMMENT_LINE = re.compile(r"(?m)^[ \t]*#[^\n]*\n?")
_TRAILING_COMMENT = re.compile(r"(?m)[ \t]+#[^\n'\"]*$")  # only where no quote follows: never inside a string


def normalise_code(code: str) -> str:
    """Code without comments, trailing spaces or blank lines: the key for deduplication.

    Regular expressions, not the tokenizer: this runs for every generated candidate (and a tuner
    checks many variants per proposal). A comment it cannot safely strip is kept, so two candidates
    that differ only there are judged twice, never merged wrongly."""
    text = _TRAILING_COMMENT.sub("", _COMMENT_LINE.sub("", code.replace("\r\n", "\n")))
    return "\n".join(line.rstrip() for line in text.split("\n") if line.strip())


def code_hash(code: str) -> str:
    return hashlib.sha256(normalise_code(code).encode()).hexdigest()[:16]


@dataclass
class Proposal:
    """What the search asks for: one candidate for a problem, maybe from a parent."""

    id: str
    problem_id: str
    step: int
    seed: int
    parent_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Generation:
    """What a generator returned for one proposal."""

    proposal_id: str
    code: str | None  # None: the generator had nothing to offer (e.g. replay ran out)
    generator: str
    model: str | None = None
    label: str | None = None  # a human label (a file name, a tuning setting)
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Candidate:
    """A generated kernel, as stored and judged."""

    id: str
    problem_id: str
    proposal_id: str
    code: str
    code_hash: str
    generator: str
    label: str | None = None
    parent_id: str | None = None


@dataclass
class Retime:
    """A judged candidate to judge again with fresh input seeds before its figure is reported.

    The judge draws new input seeds for every evaluation, so a re-timing checks correctness on inputs
    the first judging never saw and measures the time again. It is not a new candidate: it counts
    against no ``[budget] candidates``."""

    id: str  # run-unique, e.g. ``relu:r0``
    problem_id: str
    candidate_id: str
    first_speedup: float | None = None  # the speedup the first judging measured
    trials: int | None = None  # correctness trials (None: the recipe's [eval] trials)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RunContext:
    """What the engine lends plugins: the run's seed, problems, backend and settings."""

    def __init__(self, *, seed: int, problems: list[Problem], backend: Backend, recipe: dict[str, Any],
                 run_dir: Any = None) -> None:
        self.seed = seed
        self.problems = problems
        self.problems_by_id = {p.id: p for p in problems}
        self.backend = backend
        self.recipe = recipe
        self.run_dir = run_dir
        self.device: dict[str, Any] = {}  # the judge's device info, once the executor has started
        self.generator: Generator | None = None  # lent to searches that train it (TTT)
        self.shape_name = "small"

    def rng(self, component: str, *step: Any) -> random.Random:
        return rng_for(self.seed, component, *step)


class Plugin:
    """Common shape: a unique ``name``, a one-line ``description``, declared ``options``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()

    def __init__(self, **options: Any) -> None:
        # the resolved options, each declared one with its value or its declared default
        self.opts = Options(f"{self.__class__.__name__} ({self.name or 'plugin'})", self.options, options)
        self.config = dict(self.opts)  # the same, as a plain dict (what a recipe's --dry-run plan shows)


class Backend(Plugin):
    """A kernel language. ``runtime_loader`` names how the evaluation runtime loads a candidate."""

    language: ClassVar[str] = "python"
    runtime_loader: ClassVar[str] = "python-module"

    def static_check(self, code: str) -> list[str]:
        """Problems found before anything runs: one message per problem, naming the rule and line."""
        return []

    def guidance(self) -> str:
        """Prompt text telling a model how a ModelNew in this language looks."""
        return ""


class Generator(Plugin):
    async def generate(self, proposals: list[Proposal], ctx: RunContext) -> list[Generation]:
        raise NotImplementedError

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        pass


class Search(Plugin):
    def setup(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def ask(self, n: int) -> list[Proposal]:
        raise NotImplementedError

    def tell(self, candidate: Candidate | None, proposal: Proposal, result: EvalResult | None) -> None:
        raise NotImplementedError

    def done(self) -> bool:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        pass

    def metrics(self) -> dict[str, Any]:
        """Figures for the live table, ``--json`` (``search`` events) and the summary; JSON-ready.
        Per-problem figures go under ``"problems"``, keyed by problem id."""
        return {}

    def generator_routes(self) -> dict[str, dict[str, Any]]:
        """Generators (by name) that proposals with ``params["generator_hint"]`` set to that name go to,
        with their options; the rest go to the recipe's generator. Optional."""
        return {}

    def ask_retimes(self, n: int, final: bool) -> list[Retime]:
        """At most ``n`` judged candidates to judge again (see :class:`Retime`). ``final``: the engine
        asks for no more proposals (the search is done or a budget stopped generation). Optional."""
        return []

    def tell_retime(self, retime: Retime, result: EvalResult) -> dict[str, Any]:
        """The verdict on a re-timing: ``{"verdict": "accepted" | "slower" | "incorrect" | ...}``."""
        return {}


class Executor(Plugin):
    """Judges EvalRequests somewhere and yields EvalResults as each finishes (no batch barrier)."""

    capacity: int = 1
    device_info: dict[str, Any] = {}  # the device that judges (name, kind, versions), once started

    async def start(self, log_dir: Any = None) -> None:  # noqa: B027 - optional hook
        pass

    async def evaluate(self, request: EvalRequest) -> EvalResult:
        """Judge one request; the engine runs up to ``capacity`` of these concurrently."""
        raise NotImplementedError

    async def submit(self, requests: list[EvalRequest]) -> AsyncIterator[EvalResult]:
        """Judge a batch, yielding each result as it finishes (completion order, no barrier)."""
        import asyncio

        tasks = [asyncio.ensure_future(self.evaluate(r)) for r in requests]
        for fut in asyncio.as_completed(tasks):
            yield await fut

    def busy_fraction(self) -> float | None:
        return None

    def stats(self) -> dict[str, Any]:
        """Figures for the run summary (e.g. the compile stage's builds and cache hits)."""
        return {}

    async def shutdown(self) -> None:  # noqa: B027 - optional hook
        pass

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name}


class ProblemSource(Plugin):
    def load(self, table: dict[str, Any]) -> list[Problem]:
        raise NotImplementedError


class Logger(Plugin):
    def setup(self, run_dir: Any, recipe: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        pass

    def log(self, event: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
