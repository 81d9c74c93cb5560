"""The dashboard's screens."""

from kforge.tui.screens.candidate import CandidateScreen
from kforge.tui.screens.help import HelpScreen
from kforge.tui.screens.home import HomeScreen
from kforge.tui.screens.quit import QuitScreen
from kforge.tui.screens.run import RunScreen

__all__ = ["CandidateScreen", "HelpScreen", "HomeScreen", "QuitScreen", "RunScreen"]
