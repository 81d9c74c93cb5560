"""The live speedup table: one row per problem."""

from __future__ import annotations

from kforge.tui.model import PROBLEM_COLUMNS
from kforge.tui.widgets.keyed_table import KeyedTable


class ProblemTable(KeyedTable):
    COLUMNS = PROBLEM_COLUMNS
