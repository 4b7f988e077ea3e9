"""Reading a failed torchrun run (``ftplan.failures``): what ``ftplan launch`` and ``ftplan probe``
both tell the user."""

from __future__ import annotations

from ftplan.failures import explain_failed_run

WORKER_ERROR = "[rank1]: OSError: model/ does not appear to have a file named config.json"
TORCHRUN_SUMMARY = f"""{WORKER_ERROR}
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
ftplan.probe.engine FAILED
------------------------------------------------------------
Failures:
[1]:
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 1233)
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  rank      : 1 (local_rank: 1)
  exitcode  : 1 (pid: 1234)
============================================================"""


def test_a_failed_run_names_the_first_worker_and_its_error():
    text = explain_failed_run(TORCHRUN_SUMMARY)
    assert text.startswith("Worker rank 1 exited with code 1; torchrun then stopped rank 0.")
    assert text.endswith("The error: OSError: model/ does not appear to have a file named config.json")


def test_an_out_of_memory_run_says_so_without_a_project():
    text = explain_failed_run("[rank0]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB")
    assert "The error: [rank0]: torch.OutOfMemoryError: CUDA out of memory" in text


def test_output_without_an_exception_shows_its_last_lines():
    assert explain_failed_run("a\n\nb\nc\nd\n") == "Last lines of output: b | c | d"
