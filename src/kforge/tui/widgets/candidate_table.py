"""The selected problem's candidates."""

from __future__ import annotations

from kforge.tui.model import CANDIDATE_COLUMNS
from kforge.tui.widgets.keyed_table import KeyedTable


class CandidateTable(KeyedTable):
    COLUMNS = CANDIDATE_COLUMNS
