"""`ftplan launch`: run an exported project with a preflight checklist, progress and clean stops."""

from ftplan.events import OutputLines, ProgressUpdate, RunFinished, RunResult, RunStarted, Stopping
from ftplan.launch.preflight import Check, HostFacts, run_checks
from ftplan.launch.runner import Runner, new_run_dir
from ftplan.launch.session import LaunchInputError, Prepared, make_runner, prepare
from ftplan.launch.spec import LaunchOptions, LaunchSpec, SpecError, build_launch_spec
from ftplan.project import ProjectError, ProjectInfo, latest_checkpoint, load_project

__all__ = [
    "Check",
    "HostFacts",
    "LaunchInputError",
    "LaunchOptions",
    "LaunchSpec",
    "OutputLines",
    "Prepared",
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
    "make_runner",
    "new_run_dir",
    "prepare",
    "run_checks",
]
