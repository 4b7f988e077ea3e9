"""Probe a project under its own engine: one rank of ``torchrun ... -m ftplan.probe.engine DIR``.

A DeepSpeed (ZeRO-1/2/3) or multi-process project cannot be measured outside its engine: under
ZeRO-3 the model train.py builds holds empty parameter shards until the engine gathers them. So
each rank builds the project the way ``train.py main`` does (``load_config``, ``build_tokenizer``,
``build_model``, ``build_datasets``, ``build_trainer``) and runs ``trainer.train()`` for N steps
with the project's ds_config; checkpoints, the metrics file and logs go to a scratch folder, never
the project's ``output/``. Step 1 warms up (optimizer states are created lazily), steps 2..N-1 are
timed, step N is measured:

* on the CPU by ``LiveBytes``, a dispatch mode that follows every storage an aten op creates
  (released when its storage dies), on top of the bytes already live at the step's start (found
  with ``gc``: parameters and their ZeRO partitions, optimizer states and master weights, gradient
  buffers), split into the planner's components;
* on a GPU by the CUDA allocator's peak counters.

Phases: ``forward`` (to the loss), ``backward`` (under DeepSpeed it includes the engine's step:
accelerate runs ``engine.step()`` inside ``backward``) and ``optimizer_step``. Each rank writes
``rank<R>.json`` into ``--out``; ``ftplan.probe.cli`` merges them. torch is imported in functions.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import weakref
from pathlib import Path

from ftplan.project import TRAIN_CONFIG

COMPONENTS = ("weights", "gradients", "optimizer", "activations")


# ---- the CPU measurement ---------------------------------------------------------------


def _storage(t):
    try:
        return t.untyped_storage()
    except (RuntimeError, NotImplementedError):  # meta / sparse / wrapper tensors own no bytes here
        return None


class LiveBytes:
    """Bytes of live CPU tensor storages: a baseline registered by category, plus every storage
    an aten op creates while ``active`` (category: the current phase's). Tracks the running peak
    and the split by category at that peak."""

    def __init__(self):
        self.by_category: dict[str, int] = {}
        self.total = 0
        self.peak = 0
        self.peak_split: dict[str, int] = {}
        self.category = "activations"
        self._seen: dict[int, tuple[int, str]] = {}
        self._refs: dict[int, weakref.ref] = {}
        self._mode = None

    def add(self, tensor, category: str) -> None:
        st = _storage(tensor)
        if st is None or st.device.type != "cpu":
            return
        key, size = st.data_ptr(), st.nbytes()
        if not size or key in self._seen:
            return
        self._seen[key] = (size, category)
        self._refs[key] = weakref.ref(st, lambda _ref, k=key: self._release(k))
        self.total += size
        self.by_category[category] = self.by_category.get(category, 0) + size
        if self.total > self.peak:
            self.peak = self.total
            self.peak_split = dict(self.by_category)

    def _release(self, key: int) -> None:
        size, category = self._seen.pop(key, (0, ""))
        self._refs.pop(key, None)
        self.total -= size
        if category:
            self.by_category[category] -= size

    def restart_peak(self) -> None:
        self.peak, self.peak_split = self.total, dict(self.by_category)

    def __enter__(self):
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor):
                        tracker.add(t, tracker.category)
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        return False


def register_baseline(tracker: LiveBytes, trainer) -> None:
    """Every tensor alive at the measured step's start, by what it is: parameters (and their
    ZeRO-3 partitions ``ds_tensor``) are weights, ``.grad`` and ZeRO gradient buffers gradients,
    the optimizer's states and its (fp32 master) parameters optimizer; the rest counts as
    activations (the batch, buffers of collectives)."""
    import torch

    model = trainer.model
    for p in model.parameters():
        tracker.add(p, "weights")
        if getattr(p, "ds_tensor", None) is not None:
            tracker.add(p.ds_tensor, "weights")
    for b in model.buffers():
        tracker.add(b, "weights")
    optimizer = getattr(trainer, "optimizer", None)
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper, then DeepSpeed's ZeRO optimizer
    inner = getattr(inner, "optimizer", inner)
    for group in getattr(inner, "param_groups", []):
        for p in group["params"]:
            tracker.add(p, "optimizer")
            if p.grad is not None:
                tracker.add(p.grad, "gradients")
    for state in getattr(inner, "state", {}).values():
        for v in state.values():
            if torch.is_tensor(v):
                tracker.add(v, "optimizer")
    zero = getattr(getattr(trainer, "model_wrapped", None), "optimizer", None)
    for name, value in vars(zero).items() if zero is not None else ():
        if "grad" in name:
            for t in _tensors_in(value):
                tracker.add(t, "gradients")
    for p in model.parameters():
        if p.grad is not None:
            tracker.add(p.grad, "gradients")
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor):
            tracker.add(obj, "activations")


def _tensors_in(value, depth: int = 0):
    import torch

    if torch.is_tensor(value):
        yield value
    elif depth < 3 and isinstance(value, list | tuple):
        for v in value:
            yield from _tensors_in(v, depth + 1)
    elif depth < 3 and isinstance(value, dict):
        for v in value.values():
            yield from _tensors_in(v, depth + 1)


# ---- the Trainer-side probe ---------------------------------------------------------------


class StepProbe:
    """Times steps 2..N-1 and measures step N of ``trainer.train()``, phase by phase."""

    def __init__(self, trainer, steps: int):
        self.trainer, self.steps = trainer, steps
        self.cuda = False
        self.tracker: LiveBytes | None = None
        self.phase = ""
        self.phases: dict[str, int] = {}
        self.phase_split: dict[str, dict[str, int]] = {}
        self.tokens = 0
        self.timed_tokens = 0
        self.t0 = self.t1 = 0.0

    # phases ------------------------------------------------------------------------------
    def _peak_now(self) -> tuple[int, dict[str, int]]:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            return int(torch.cuda.max_memory_allocated()), {}
        return self.tracker.peak, dict(self.tracker.peak_split)

    def begin(self, phase: str) -> None:
        if self.phase:
            peak, split = self._peak_now()
            if peak >= self.phases.get(self.phase, -1):
                self.phases[self.phase], self.phase_split[self.phase] = peak, split
        self.phase = phase
        if not phase:
            return
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
        else:
            self.tracker.restart_peak()
            self.tracker.category = "optimizer" if phase == "optimizer_step" else "activations"

    # hooks ---------------------------------------------------------------------------------
    def measuring(self) -> bool:
        return self.trainer.state.global_step == self.steps - 1

    def on_compute_loss(self, inputs) -> None:
        mask = inputs.get("attention_mask") if hasattr(inputs, "get") else None
        ids = inputs.get("input_ids") if hasattr(inputs, "get") else None
        n = int(mask.sum()) if mask is not None else (int(ids.numel()) if ids is not None else 0)
        self.tokens += n
        if 0 < self.trainer.state.global_step < self.steps - 1:
            self.timed_tokens += n

    def step_begin(self) -> None:
        step = self.trainer.state.global_step
        if step == 1:
            self.t0 = time.perf_counter()
        if step == self.steps - 1 and self.steps >= 3:
            self.t1 = time.perf_counter()
        if not self.measuring():
            return
        import torch

        gc.collect()
        device = next(self.trainer.model.parameters()).device
        self.cuda = device.type == "cuda"
        if not self.cuda:
            self.tracker = LiveBytes()
            register_baseline(self.tracker, self.trainer)
            self.tracker.__enter__()
        else:
            torch.cuda.synchronize()
        self._wrap_engine_step()
        self.begin("forward")

    def _wrap_engine_step(self) -> None:
        engine = getattr(self.trainer, "model_wrapped", None)
        if engine is None or not hasattr(engine, "zero_optimization_stage") or hasattr(engine, "_ftplan_step"):
            return
        original = engine.step

        def step(*args, **kwargs):
            if self.phase:
                self.begin("optimizer_step")
            return original(*args, **kwargs)

        engine._ftplan_step = original
        engine.step = step

    def pre_optimizer_step(self) -> None:
        if self.phase and self.phase != "optimizer_step":
            self.begin("optimizer_step")

    def step_end(self) -> None:
        if not self.phase:
            return
        self.begin("")
        if self.tracker is not None:
            self.tracker.__exit__(None, None, None)

    def after_loss(self) -> None:
        if self.phase == "forward":
            self.begin("backward")

    def before_loss(self) -> None:
        if self.phase == "backward":  # the next micro-batch of an accumulated step
            self.begin("forward")

    # result ---------------------------------------------------------------------------------
    def result(self, seconds_timed: float) -> dict:
        peak_phase = max(self.phases, key=self.phases.get) if self.phases else ""
        split = self.phase_split.get(peak_phase, {})
        peak = self.phases.get(peak_phase, 0)
        components = {k: int(split.get(k, 0)) for k in COMPONENTS}
        if self.cuda:
            components = {k: 0 for k in COMPONENTS}
            components["activations"] = peak
        return {
            "total": int(peak),
            "peak_phase": peak_phase,
            "phases": {k: int(v) for k, v in self.phases.items()},
            **components,
            "tokens_timed": self.timed_tokens,
            "seconds_timed": seconds_timed,
        }


def probe_callback(probe: StepProbe):
    from transformers import TrainerCallback

    class _ProbeCallback(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            probe.step_begin()

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            probe.pre_optimizer_step()

        def on_step_end(self, args, state, control, **kwargs):
            probe.step_end()

    return _ProbeCallback()


def _wrap_compute_loss(trainer, probe: StepProbe) -> None:
    original = trainer.compute_loss

    def compute_loss(model, inputs, *args, **kwargs):
        probe.before_loss()
        probe.on_compute_loss(inputs)
        out = original(model, inputs, *args, **kwargs)
        probe.after_loss()
        return out

    trainer.compute_loss = compute_loss


def run_rank(project: Path, steps: int, out: Path) -> dict:
    """Build the project as train.py does, train ``steps`` steps, measure the last; write rank<R>.json."""
    from ftplan.probe.cli import _import_train

    train = _import_train(project)
    cfg = train.load_config(str(project / TRAIN_CONFIG))
    scratch = Path(tempfile.mkdtemp(prefix="ftplan-probe-"))
    cfg["checkpoints"]["output_dir"] = str(scratch)  # never the user's output/ (nor its metrics file)
    cfg["checkpoints"]["save_steps"] = 10**9
    cfg["data"]["eval_fraction"] = 0.0
    tokenizer = train.build_tokenizer(cfg)
    model = train.build_model(cfg, tokenizer)
    train_ds, eval_ds = train.build_datasets(cfg, tokenizer)
    trainer = train.build_trainer(cfg, model, tokenizer, train_ds, None, max_steps=steps)
    trainer.args.save_strategy = "no"
    probe = StepProbe(trainer, steps)
    _wrap_compute_loss(trainer, probe)
    trainer.add_callback(probe_callback(probe))
    trainer.train()
    end = time.perf_counter()
    timed = (probe.t1 or end) - probe.t0 if probe.t0 else 0.0
    rank = int(os.environ.get("RANK", "0"))
    result = {"rank": rank, "world_size": int(os.environ.get("WORLD_SIZE", "1")), **probe.result(timed)}
    result["device"] = "cuda" if probe.cuda else "cpu"
    result["loss"] = loss_kind(trainer.model)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{rank}.json").write_text(json.dumps(result) + "\n", encoding="utf-8")
    return result


def loss_kind(model) -> str:
    """ "trl_fused" when TRL patched its fused LM head into the model (SFTTrainer), else "hf"."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "trl_fused" if "fused_lm_head" in inspect.signature(base.forward).parameters else "hf"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ftplan.probe.engine")
    p.add_argument("dir")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    run_rank(Path(args.dir), args.steps, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
