"""Export a plan as a training project a user can read, commit and run without ftplan."""

from ftplan.export.project import ExportError, render_project
from ftplan.export.write import ExportResult, export_project

__all__ = ["ExportError", "ExportResult", "export_project", "render_project"]
