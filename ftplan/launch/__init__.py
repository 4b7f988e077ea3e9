"""`ftplan launch`: run an exported project with a preflight checklist, progress and clean stops."""

from ftplan.launch.events import OutputLines, ProgressUpdate, RunFinished, RunResult, RunStarted, Stopping
from ftplan.launch.preflight import Check, HostFacts, run_checks
from ftplan.launch.project import ProjectError, ProjectInfo, latest_checkpoint, load_project
from ftplan.launch.runner import Runner, new_run_dir
from ftplan.launch.spec import LaunchOptions, LaunchSpec, SpecError, build_launch_spec

__all__ = [
    "Check",
    "HostFacts",
    "LaunchOptions",
    "LaunchSpec",
    "OutputLines",
    "ProgressUpdate",
    "ProjectError",
    "ProjectInfo",
    "RunFinished",
    "RunResult",
    "RunStarted",
    "Runner",
    "SpecError",
    "Stopping",
    "build_launch_spec",
    "latest_checkpoint",
    "load_project",
    "new_run_dir",
    "run_checks",
]
