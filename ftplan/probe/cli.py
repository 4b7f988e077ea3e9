"""`ftplan probe DIR [--steps N] [--json]`: check the plan's memory on real training steps.

Imports the exported project's ``train.py`` (``load_config``, ``build_tokenizer``,
``build_model``, ``build_datasets``, ``build_trainer``), takes the trainer's model, optimizer and
a real batch from its dataloader, and runs ``N`` steps the way the Trainer does (forward with
labels, backward, clipping, step, ``zero_grad(set_to_none=True)``): the first warms up (Adam
states are created lazily), the middle ones are timed, the last is measured per phase
(MemTracker on the CPU, the CUDA allocator's peak counters on a GPU). Prints predicted
(``DIR/plan.json``) against measured by component, a verdict, and saves ``DIR/probe.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ftplan.project import PLAN_FILE, TRAIN_CONFIG, TRAIN_SCRIPT, ProjectError, read_plan, run_environment

PROBE_RESULT = "probe.json"
PROBE_LOG = "probe.log"
"""The engine's whole output when a probe under torchrun fails."""

if TYPE_CHECKING:
    from ftplan.planner import MethodPlan, Plan

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
TOLERANCE = 0.10
THROUGHPUT_FACTOR = 2.0
"""A tokens/s figure within this factor of the measurement is the right order for hours and dollars."""
COMPONENTS = ("weights", "gradients", "optimizer", "activations")


class ProbeError(Exception):
    """Bad project folder: one message, exit 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ftplan probe",
        description="Run a few real training steps of an exported project and compare memory with the plan.",
    )
    p.add_argument("dir", metavar="DIR", help="the exported project folder (train.py, train_config.toml, plan.json)")
    p.add_argument("--steps", type=int, default=3, help="steps to run (>= 1; the last one is measured)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout, nothing else")
    return p


def _check_dir(path: str) -> Path:
    d = Path(path)
    if not d.is_dir():
        raise ProbeError(f"ftplan probe: {path} is not a folder (give the folder `ftplan --out` exported)")
    missing = [n for n in (TRAIN_SCRIPT, TRAIN_CONFIG) if not (d / n).is_file()]
    if missing:
        raise ProbeError(f"ftplan probe: {path} is not an exported project: {', '.join(missing)} missing")
    return d


def _import_train(d: Path):
    spec = importlib.util.spec_from_file_location("ftplan_probe_train", d / TRAIN_SCRIPT)
    if spec is None or spec.loader is None:
        raise ProbeError(f"ftplan probe: cannot import {d / TRAIN_SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(d))
    try:
        spec.loader.exec_module(module)
    finally:
        if sys.path and sys.path[0] == str(d):
            sys.path.pop(0)
    needed = ("load_config", "build_tokenizer", "build_model", "build_datasets", "build_trainer")
    lacking = [n for n in needed if not hasattr(module, n)]
    if lacking:
        raise ProbeError(f"ftplan probe: {d / TRAIN_SCRIPT} lacks {', '.join(lacking)} (re-export the project)")
    return module


def _method_of(cfg: dict) -> str:
    return str(cfg.get("method", {}).get("kind", "lora"))


def predicted_memory(d: Path, cfg: dict, on_cpu: bool, loss: str | None = None) -> dict:
    """Predicted bytes by component for the project's method.

    From ``plan.json`` (the exported plan); when the probe runs on the CPU while the plan was
    made for a GPU, the estimate is recomputed for ``Device(CPU)`` with the plan's settings so
    that the comparison is like for like (and the GPU plan is kept alongside).
    """
    method = _method_of(cfg)
    plan_path = d / PLAN_FILE
    out: dict = {"method": method, "source": ""}
    if plan_path.is_file():
        plan = _read_plan(plan_path)
        mp = plan.methods.get(method)
        if mp is None:
            raise ProbeError(f"ftplan probe: {plan_path} has no plan for method {method!r}")
        mem = mp.memory.model_dump()
        out.update(memory=mem, phases=dict(mp.memory_phases), source=PLAN_FILE)
        out["tokens_per_second"] = mp.time.tokens_per_second
        gpu = plan.hardware.gpu
        out["device"] = gpu
        if on_cpu and gpu != "cpu":
            cpu_mem = _recompute_for_cpu(plan, mp, loss)
            if cpu_mem is not None:
                out["plan_memory"] = mem
                out["memory"] = cpu_mem
                out["source"] = f"plan.json settings, re-estimated for the CPU (plan made for {gpu})"
    else:
        section = cfg.get("plan", {})
        mem = {k: int(section.get(k, 0)) for k in (*COMPONENTS, "overhead", "total")}
        out.update(memory=mem, source="train_config.toml [plan]", device=section.get("device", ""))
        out["tokens_per_second"] = float(section.get("tokens_per_second", 0.0))
    return out


def _read_plan(path: Path) -> Plan:
    try:
        return read_plan(path)
    except ProjectError as exc:
        raise ProbeError("ftplan probe: " + "; ".join(exc.problems)) from exc


def _recompute_for_cpu(plan: Plan, mp: MethodPlan, loss: str | None = None) -> dict | None:
    try:
        from ftplan.planner.catalog.gpus import CPU
        from ftplan.planner.device import Device
        from ftplan.planner.memory import estimate_memory
        from ftplan.planner.models import resolve_model

        arch = resolve_model(plan.model.name).arch
        device = Device(CPU, plan.hardware.gpus_per_node, plan.hardware.nodes)
        return estimate_memory(arch, mp.settings, device, loss=loss).model_dump()
    except Exception:  # the plan's own numbers are still shown
        return None


def _to_device(batch: dict, device) -> dict:
    return {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}


def run_probe(d: Path, steps: int) -> dict:
    """Build the project's trainer and measure; returns the result dictionary."""
    from ftplan.probe.measure import _step, measure_training_step

    train = _import_train(d)
    cfg = train.load_config(str(d / TRAIN_CONFIG))
    tok = train.build_tokenizer(cfg)
    model = train.build_model(cfg, tok)
    train_ds, eval_ds = train.build_datasets(cfg, tok)
    trainer = train.build_trainer(cfg, model, tok, train_ds, eval_ds, max_steps=steps)
    model = trainer.model
    model.train()
    optimizer = trainer.create_optimizer()
    max_grad_norm = float(getattr(trainer.args, "max_grad_norm", 1.0) or 0.0)
    device = next(model.parameters()).device
    batches = iter(trainer.get_train_dataloader())
    prepare = getattr(trainer, "_prepare_inputs", None)

    def ready(b):
        return prepare(b) if prepare is not None else _to_device(b, device)

    def forward(m, b):  # what Trainer.training_step runs: the trainer's own compute_loss
        return trainer.compute_loss(m, dict(b))

    batch = ready(next(batches))
    count = lambda b: int(b["attention_mask"].sum()) if "attention_mask" in b else int(b["input_ids"].numel())  # noqa: E731
    warm = 1 if steps >= 2 else 0
    timed = max(steps - 1 - warm, 0)
    for _ in range(warm):
        _step(model, optimizer, batch, max_grad_norm, forward=forward)
    tokens, seconds = 0, 0.0
    if timed:
        if device.type == "cuda":
            import torch

            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(timed):
            try:
                b = ready(next(batches))
            except StopIteration:
                b = batch
            _step(model, optimizer, b, max_grad_norm, forward=forward)
            tokens += count(b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    # Two micro-batches reach the accumulation peak (gradients held through the second one).
    accumulation = min(int(getattr(trainer.args, "gradient_accumulation_steps", 1) or 1), 2)
    m = measure_training_step(
        model,
        optimizer,
        batch,
        warmup_steps=0,
        max_grad_norm=max_grad_norm,
        accumulation=accumulation,
        forward=forward,
    )
    if not timed:
        tokens, seconds = count(batch), m.seconds
    # TRL's SFTTrainer patches a fused LM head into the model; a plain Trainer uses the model's loss.
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    loss = "trl_fused" if "fused_lm_head" in inspect.signature(base.forward).parameters else "hf"
    if cfg["training"].get("loss") == "full_logits":  # train.py's ModelLossSFTTrainer: the model's own loss
        loss = "hf"
    pred = predicted_memory(d, cfg, on_cpu=device.type != "cuda", loss=loss)
    pmem = pred.get("memory", {})
    predicted_peak = int(pmem.get("total", 0)) - (int(pmem.get("overhead", 0)) if device.type != "cuda" else 0)
    measured_total = m.peak
    if device.type == "cuda":
        measured_total += int(pmem.get("overhead", 0))  # CUDA context etc. outside the allocator
    error = (predicted_peak - measured_total) / measured_total if measured_total else 0.0
    return {
        "project": str(d),
        "method": pred.get("method"),
        "device": "cuda" if device.type == "cuda" else "cpu",
        "steps": steps,
        "predicted": {
            **{k: int(pmem.get(k, 0)) for k in (*COMPONENTS, "overhead")},
            "total": predicted_peak,
            "source": pred.get("source", ""),
            "plan_device": pred.get("device", ""),
        },
        "measured": {**m.components, "total": measured_total, "peak_phase": m.peak_phase, "phases": m.phases},
        "error": error,
        "tokens_per_s": {
            "predicted": float(pred.get("tokens_per_second", 0.0) or 0.0),
            "measured": tokens / seconds if seconds else 0.0,
        },
    }


def engine_processes(d: Path, cfg: dict) -> int:
    """Processes the project runs as on one machine: the plan's GPUs per node (0: no engine needed,
    the in-process probe measures it: one process without DeepSpeed)."""
    plan_path = d / PLAN_FILE
    nproc = _read_plan(plan_path).hardware.gpus_per_node if plan_path.is_file() else 1
    uses_deepspeed = bool(cfg.get("training", {}).get("deepspeed"))
    return nproc if (nproc > 1 or uses_deepspeed) else 0


def _engine_env(nproc: int, on_cpu: bool) -> dict[str, str]:
    """The environment ``ftplan launch`` gives the project (CPU: no GPUs, gloo, cores shared), plus
    this ftplan on the path of the workers."""
    import os

    import ftplan

    env = dict(os.environ)
    root = str(Path(ftplan.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(run_environment(on_cpu))
    if on_cpu:  # the cores shared between the processes
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    return env


def run_engine_probe(d: Path, steps: int, nproc: int | None = None) -> dict:
    """Probe under the project's engine: ``torchrun --standalone --nproc_per_node N -m
    ftplan.probe.engine`` (each rank builds the project as train.py does and trains ``steps``
    steps; see ``ftplan.probe.engine``). The result holds the busiest rank's memory and every
    rank's peak; tokens/s is all ranks' timed tokens over the slowest rank's time."""
    import subprocess
    import tempfile

    cfg = _import_train(d).load_config(str(d / TRAIN_CONFIG))
    nproc = nproc or max(1, engine_processes(d, cfg))
    on_cpu = _runs_on_cpu(d, cfg)
    with tempfile.TemporaryDirectory(prefix="ftplan-probe-") as tmp:
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                "-m", "ftplan.probe.engine", str(d.resolve()), "--steps", str(steps), "--out", tmp]  # fmt: skip
        run = subprocess.run(argv, cwd=d, env=_engine_env(nproc, on_cpu), capture_output=True, text=True)
        ranks = [json.loads(p.read_text()) for p in sorted(Path(tmp).glob("rank*.json"))]
    if run.returncode != 0 or len(ranks) != nproc:
        raise RuntimeError(_engine_failure(d, nproc, run.returncode, run.stdout + run.stderr))
    return engine_result(d, cfg, steps, ranks)


def _engine_failure(d: Path, nproc: int, returncode: int, output: str) -> str:
    """What the user reads when the probe's processes fail: the launcher's own reading of the
    output (``ftplan.failures``), and the whole output kept in the project as ``probe.log``."""
    from ftplan.failures import explain_failed_run
    from ftplan.project import load_project

    log = d / PROBE_LOG
    log.write_text(output, encoding="utf-8")
    try:
        project = load_project(d)
    except ProjectError:
        project = None
    return f"the probe's {nproc} process(es) exited {returncode}. {explain_failed_run(output, project)} (whole output: {log})"


def _runs_on_cpu(d: Path, cfg: dict) -> bool:
    if cfg.get("training", {}).get("use_cpu"):
        return True
    try:
        import torch

        return not torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return True


def engine_result(d: Path, cfg: dict, steps: int, ranks: list[dict]) -> dict:
    """Merge the ranks' measurements into the probe's result (the same keys as ``run_probe``)."""
    busiest = max(ranks, key=lambda r: r["total"])
    device = busiest.get("device", "cpu")
    pred = predicted_memory(d, cfg, on_cpu=device != "cuda", loss=busiest.get("loss"))
    pmem = pred.get("memory", {})
    predicted_peak = int(pmem.get("total", 0)) - (int(pmem.get("overhead", 0)) if device != "cuda" else 0)
    measured_total = busiest["total"] + (int(pmem.get("overhead", 0)) if device == "cuda" else 0)
    seconds = max(r["seconds_timed"] for r in ranks)
    tokens = sum(r["tokens_timed"] for r in ranks)
    return {
        "project": str(d),
        "method": pred.get("method"),
        "device": device,
        "steps": steps,
        "engine": f"torchrun, {len(ranks)} process{'es' if len(ranks) > 1 else ''}"
        + (", DeepSpeed" if cfg.get("training", {}).get("deepspeed") else ""),
        "predicted": {
            **{k: int(pmem.get(k, 0)) for k in (*COMPONENTS, "overhead")},
            "total": predicted_peak,
            "source": pred.get("source", ""),
            "plan_device": pred.get("device", ""),
        },
        "measured": {
            **{k: int(busiest.get(k, 0)) for k in COMPONENTS},
            "total": measured_total,
            "peak_phase": busiest["peak_phase"],
            "phases": busiest["phases"],
            "rank": busiest["rank"],
            "ranks": [int(r["total"]) for r in sorted(ranks, key=lambda r: r["rank"])],
        },
        "error": (predicted_peak - measured_total) / measured_total if measured_total else 0.0,
        "tokens_per_s": {
            "predicted": float(pred.get("tokens_per_second", 0.0) or 0.0),
            "measured": tokens / seconds if seconds else 0.0,
        },
    }


def throughput_ratio(result: dict) -> float | None:
    """predicted / measured tokens/s when both are for this device (None: nothing to judge)."""
    t = result.get("tokens_per_s", {})
    plan_device = result.get("predicted", {}).get("plan_device", "")
    same_device = (plan_device == "cpu") == (result.get("device") == "cpu")
    if not same_device or not t.get("measured") or not t.get("predicted"):
        return None
    return t["predicted"] / t["measured"]


def verdict(result: dict) -> str:
    """The memory verdict, then the throughput one (off by more than THROUGHPUT_FACTOR: a warning)."""
    lines = [memory_verdict(result)]
    ratio = throughput_ratio(result)
    if ratio is not None:
        if 1 / THROUGHPUT_FACTOR <= ratio <= THROUGHPUT_FACTOR:
            lines.append(f"OK: the plan's throughput holds (predicted {ratio:.2f}x the measured tokens/s).")
        else:
            word = "faster" if ratio < 1 else "slower"
            lines.append(
                f"WARNING: the run is {max(ratio, 1 / ratio):.1f}x {word} than planned "
                f"(predicted {ratio:.2f}x the measured tokens/s): the plan's hours and dollars are off by as much."
            )
    return "\n".join(lines)


def memory_verdict(result: dict) -> str:
    err = result["error"]
    if abs(err) <= TOLERANCE:
        return f"OK: the plan's memory holds on real steps (error {100 * err:+.1f}%, within {100 * TOLERANCE:.0f}%)."
    if err < 0:
        more = -err / (1 + err)  # (measured - predicted) / predicted
        return (
            f"WARNING: the run needs {100 * more:.0f}% more memory than planned; leave headroom or lower "
            "micro_batch_size / max_seq_len."
        )
    return f"NOTE: the plan is {100 * err:.0f}% above the measured peak (conservative here)."


def _render(result: dict) -> str:
    from ftplan.probe.measure import fmt_bytes

    p, m = result["predicted"], result["measured"]
    lines = [
        f"ftplan probe {result['project']}: {result['method']} on {result['device']}, {result['steps']} steps",
        f"predicted from {p['source']}",
        "",
    ]
    lines.append(f"{'component':12s} {'predicted':>12s} {'measured':>12s} {'error':>8s}")
    for k in (*COMPONENTS, "total"):
        pv, mv = p.get(k, 0), m.get(k, 0)
        e = f"{100 * (pv - mv) / mv:+.1f}%" if mv else "-"
        lines.append(f"{k:12s} {fmt_bytes(pv):>12s} {fmt_bytes(mv):>12s} {e:>8s}")
    lines.append(
        f"measured peak phase: {m['peak_phase']}  ({', '.join(f'{k} {fmt_bytes(v)}' for k, v in m['phases'].items())})"
    )
    t = result["tokens_per_s"]
    where = (
        f" (the plan's figure is for {p['plan_device']})" if p.get("plan_device") not in ("", result["device"]) else ""
    )
    lines.append(f"tokens/s: predicted {t['predicted']:,.0f}, measured {t['measured']:,.0f}{where}")
    if result.get("engine"):
        ranks = ", ".join(fmt_bytes(v) for v in m.get("ranks", []))
        lines.append(f"engine: {result['engine']}; peak per rank: {ranks} (rank {m.get('rank', 0)} shown)")
    lines.append(verdict(result))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        d = _check_dir(args.dir)
        if args.steps < 1:
            raise ProbeError("ftplan probe: --steps must be at least 1")
        _import_train(d)  # fail early, with one message, on a broken project
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            raise ProbeError("ftplan probe: torch is not installed (pip install 'ftplan[train]')") from exc
        import contextlib

        # Libraries print progress and notices; keep stdout for the result alone.
        with contextlib.redirect_stdout(sys.stderr):
            train = _import_train(d)
            if engine_processes(d, train.load_config(str(d / TRAIN_CONFIG))):
                result = run_engine_probe(d, max(args.steps, 3))
            else:
                result = run_probe(d, args.steps)
    except ProbeError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # the project's own code failed: say so in one line
        print(f"ftplan probe: the project failed while probing: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    (d / PROBE_RESULT).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        print(_render(result))
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
