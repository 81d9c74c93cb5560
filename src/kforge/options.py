"""Declared recipe options: each plugin lists the keys it accepts, with types, defaults and docs.

The recipe validator checks a table against these declarations, so a wrong key or value gets a
message naming the key path and what is allowed, and ``kforge plugins`` can list them.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


class RecipeError(Exception):
    """A recipe (or an override) is wrong in a way the user must fix. Exit code 2.

    ``mistakes`` holds each mistake found (one, or all of a recipe's at once: :class:`Mistakes`)."""

    def __init__(self, message: str = "", mistakes: list[str] | None = None) -> None:
        self.mistakes = list(mistakes) if mistakes else [message]
        if mistakes and not message:
            message = (mistakes[0] if len(mistakes) == 1 else
                       f"{len(mistakes)} problems:\n" + "\n".join(f"  - {p}" for p in mistakes))
        super().__init__(message)


class Mistakes:
    """Collects the mistakes of a recipe so that all of them are reported at once.

    ``with mistakes.check(): ...`` records a RecipeError raised inside and goes on;
    :meth:`raise_if_any` raises one RecipeError that lists them all."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def add(self, message: str) -> None:
        self.found.append(message)

    def check(self) -> _Catch:
        return _Catch(self)

    def raise_if_any(self) -> None:
        if self.found:
            raise RecipeError(mistakes=self.found)


class _Catch:
    def __init__(self, owner: Mistakes) -> None:
        self.owner = owner

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        if isinstance(exc, RecipeError):
            self.owner.found.extend(exc.mistakes)
            return True
        return False


def read_text(path: Any, what: str) -> str:
    """A text file's contents, or a RecipeError that says why not (missing, unreadable, not UTF-8)."""
    from pathlib import Path

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RecipeError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{what} {path} is not UTF-8 text (byte {data[exc.start]:#04x} at offset "
                          f"{exc.start}): is it the right file?") from None


# integers a recipe may hold: SQLite and the judge store them as signed 64-bit
MAX_INT = 2**63 - 1


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "a table"}


@dataclass(frozen=True)
class Option:
    """One recipe key of a plugin or of a core table."""

    name: str
    type: Any  # a type, or a tuple of types
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] | None = None
    required: bool = False
    item_type: type | None = None  # for lists: the type of each item
    minimum: float | None = None
    is_path: bool = False  # resolved relative to the recipe file's folder

    def type_name(self) -> str:
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        names = [_TYPE_NAMES.get(t, t.__name__) for t in types]
        if list in types and self.item_type is not None:
            item = _TYPE_NAMES[self.item_type].split(" ", 1)[1]
            names = [n if n != "a list" else f"a list of {item}s" for n in names]
        return " or ".join(names)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type_name(), "default": self.default, "help": self.help,
                "choices": list(self.choices) if self.choices else None, "required": self.required}

    def check(self, value: Any, path: str) -> Any:
        """Return the value coerced to the declared type, or raise RecipeError."""
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        if value is None and not self.required:
            return None
        ok = False
        for t in types:
            if t is float and isinstance(value, int) and not isinstance(value, bool):
                value, ok = float(value), True
                break
            if t is int and isinstance(value, bool):
                continue
            if isinstance(value, t):
                ok = True
                break
        if not ok:
            raise RecipeError(f"{path} must be {self.type_name()}, not {value!r}.")
        if isinstance(value, float) and not math.isfinite(value):
            raise RecipeError(f"{path} is {value!r}; it must be a finite number.")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
            raise RecipeError(f"{path} is {value}; that is too large (at most {MAX_INT}).")
        if isinstance(value, list) and self.item_type is not None:
            for i, item in enumerate(value):
                if not isinstance(item, self.item_type) or (self.item_type is int and isinstance(item, bool)):
                    raise RecipeError(f"{path}[{i}] must be {_TYPE_NAMES[self.item_type]}, not {item!r}.")
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(repr(c) for c in self.choices)
            raise RecipeError(f"{path} is {value!r}; allowed: {allowed}.{_close(value, self.choices)}")
        if self.minimum is not None and isinstance(value, (int, float)) and value < self.minimum:
            raise RecipeError(f"{path} is {value!r}; it must be at least {self.minimum}.")
        return value


@dataclass
class OptionSet:
    """The options of one table (a plugin's or a core table's)."""

    owner: str
    options: tuple[Option, ...] = field(default_factory=tuple)

    def resolve(self, table: dict[str, Any], path: str, skip: tuple[str, ...] = ("name",)) -> dict[str, Any]:
        """The table's values checked against the options, defaults filled in; a RecipeError that
        lists every mistake of the table."""
        known = {o.name: o for o in self.options}
        mistakes = Mistakes()
        for key in table:
            if key in skip:
                continue
            if key not in known:
                allowed = ", ".join(sorted(known)) or "(no options)"
                mistakes.add(f"{path}.{key} is not an option of {self.owner}.{_close(key, list(known))} "
                             f"Allowed keys: {allowed}.")
        resolved: dict[str, Any] = {}
        for name, opt in known.items():
            if name in table:
                with mistakes.check():
                    resolved[name] = opt.check(table[name], f"{path}.{name}")
            elif opt.required:
                mistakes.add(f"{path}.{name} is required by {self.owner}: {opt.help}")
            else:
                resolved[name] = opt.default
        mistakes.raise_if_any()
        return resolved


class Options(Mapping[str, Any]):
    """A plugin's resolved options, read as attributes (``self.opts.max_tokens``) or by key.

    Every declared option is there: the value given, else the declaration's default, which is the
    only place a default is written (a plugin never repeats it in ``config.get(key, default)``).
    The recipe validator has already checked and coerced a recipe's values; a plugin built from
    Python gets the same defaults. Reading an option that is not declared is an error that names the
    declared ones."""

    def __init__(self, owner: str, declared: Iterable[Option], given: Mapping[str, Any]) -> None:
        values = dict(given)
        self._names: list[str] = []
        for opt in declared:
            self._names.append(opt.name)
            if values.get(opt.name) is None:
                default = opt.default
                values[opt.name] = type(default)(default) if isinstance(default, (list, dict)) else default
        self._owner = owner
        self._values = values

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"{self._owner} declares no option {name!r}.{_close(name, self._names)} "
                                 f"Its options: {', '.join(self._names) or '(none)'}.") from None

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Options({self._owner}: {self._values!r})"


def _close(word: Any, candidates: Any) -> str:
    if not isinstance(word, str):
        return ""
    match = difflib.get_close_matches(word, [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" Did you mean {match[0]!r}?" if match else ""


def close_match(word: str, candidates: Any) -> str:
    """' Did you mean X?' or ''."""
    return _close(word, candidates)
