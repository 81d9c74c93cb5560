"""Widgets of the dashboard: they show view models from :mod:`kforge.tui.model`, nothing more."""

from kforge.tui.widgets.candidate_table import CandidateTable
from kforge.tui.widgets.evaluation import EvaluationView
from kforge.tui.widgets.event_log import EventLog
from kforge.tui.widgets.keyed_table import KeyedTable
from kforge.tui.widgets.panels import BudgetPanel, KeyValuePanel
from kforge.tui.widgets.problem_table import ProblemTable

__all__ = ["BudgetPanel", "CandidateTable", "EvaluationView", "EventLog", "KeyValuePanel", "KeyedTable",
           "ProblemTable"]
