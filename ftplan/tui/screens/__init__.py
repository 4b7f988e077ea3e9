"""The app's screens and dialogs, one per file."""

from ftplan.tui.screens.confirm import ConfirmScreen
from ftplan.tui.screens.export import ExportScreen
from ftplan.tui.screens.help import HelpScreen
from ftplan.tui.screens.launch import LaunchScreen
from ftplan.tui.screens.save import SavePathScreen

__all__ = ["ConfirmScreen", "ExportScreen", "HelpScreen", "LaunchScreen", "SavePathScreen"]
