"""A DataTable whose rows are keyed and whose cells are updated in place, only where they changed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.text import Text
from textual.widgets import DataTable


def _cell(value: Any) -> Any:
    """Plain strings (labels, ids, generator names) are shown as written, never read as markup:
    a label like ``BLOCK_SIZE[min] 4096->1024`` must keep its ``[min]``."""
    return Text(value) if isinstance(value, str) else value


class KeyedTable(DataTable[Any]):
    """Rows keyed by id; ``upsert`` adds new rows and rewrites only the cells whose value changed.

    Columns have fixed widths, so an update never reflows the table."""

    COLUMNS: Sequence[tuple[str, str, int]] = ()  # (key, label, width)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._cells: dict[str, dict[str, Any]] = {}

    def on_mount(self) -> None:
        for key, label, width in self.COLUMNS:
            self.add_column(label, key=key, width=width)

    def upsert(self, rows: Iterable[tuple[str, Mapping[str, Any]]]) -> int:
        """Add or update rows; returns how many cells were written. Call inside ``app.batch_update()``."""
        written = 0
        for row_key, cells in rows:
            old = self._cells.get(row_key)
            if old is None:
                self.add_row(*(_cell(cells[k]) for k, _, _ in self.COLUMNS), key=row_key)
                self._cells[row_key] = dict(cells)
                written += len(cells)
                continue
            for col, value in cells.items():
                if old.get(col) != value:
                    self.update_cell(row_key, col, _cell(value))
                    old[col] = value
                    written += 1
        return written

    def has_row(self, row_key: str) -> bool:
        return row_key in self._cells

    def reset(self) -> None:
        """Drop every row (when the table starts showing something else, not on updates)."""
        self.clear()
        self._cells.clear()

    @property
    def highlighted_key(self) -> str | None:
        if not self.row_count or self.cursor_row < 0:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:  # noqa: BLE001 - an empty or shrinking table has no cursor row
            return None
        return None if key.value is None else str(key.value)

    def move_to(self, row_key: str) -> None:
        if row_key in self._cells:
            self.move_cursor(row=self.get_row_index(row_key))
