"""The dashboard: a Textual app that launches and watches runs.

Only :mod:`kforge.tui.app`, ``screens`` and ``widgets`` import Textual. :mod:`kforge.tui.model` (the
view models read from a run's store) and :mod:`kforge.tui.launch` (starting ``kforge run`` in a
subprocess) are headless, and nothing in the headless path imports this package's Textual parts.
"""
