"""A stand-in for the exported train.py: same flags, same metrics file, same checkpoint folders.

Behaviour switches (environment): FAKE_STEP_SECONDS, FAKE_TOTAL_STEPS, FAKE_OOM_AT_STEP,
FAKE_DIE_RANK + FAKE_DIE_AT_STEP (that rank SIGKILLs itself), FAKE_IGNORE_SIGTERM (1: every
rank, rankN: rank N only), FAKE_END_ON_SIGTERM (1: on SIGTERM rank 0 writes the exported train.py's
``{"event": "end", "status": "interrupted"}`` line, then exits 143).
"""

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="train_config.toml")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--resume", nargs="?", const="latest", default=None)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    cfg = tomllib.loads(Path(args.config).read_text())
    out = Path(cfg["checkpoints"]["output_dir"])
    metrics = out / cfg["logging"]["metrics_file"]  # in output_dir, as the exported train.py does
    if args.smoke:  # checkpoints in output_dir/smoke, as the exported train.py does
        out = out / "smoke"
    save_steps = int(cfg["checkpoints"].get("save_steps", 2))
    total = args.max_steps or int(os.environ.get("FAKE_TOTAL_STEPS", "20"))
    step_s = float(os.environ.get("FAKE_STEP_SECONDS", "0.05"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    ignore = os.environ.get("FAKE_IGNORE_SIGTERM", "")
    if ignore == "1" or ignore == f"rank{rank}":

        def hang(*_):  # like a worker stuck in a collective: only SIGKILL ends it
            print(f"rank {rank}: ignoring SIGTERM", flush=True)
            while True:
                time.sleep(0.1)

        signal.signal(signal.SIGTERM, hang)
    if os.environ.get("FAKE_END_ON_SIGTERM") == "1":

        def end(*_):
            if rank == 0:
                with metrics.open("a") as fh:
                    fh.write(json.dumps({"event": "end", "status": "interrupted"}) + "\n")
            os._exit(143)

        signal.signal(signal.SIGTERM, end)
    dist = None
    if world > 1:
        import torch
        import torch.distributed as dist

        dist.init_process_group(backend=os.environ.get("FTPLAN_DIST_BACKEND", "gloo"))
        print(f"rank {rank}/{world}: process group up ({dist.get_backend()}) pid {os.getpid()}", flush=True)
    start = 0
    if args.resume:
        ckpts = sorted((int(c.name.split("-")[1]), c) for c in out.glob("checkpoint-*"))
        if not ckpts:
            print("no checkpoint to resume from", file=sys.stderr)
            return 1
        start = ckpts[-1][0]
        print(f"rank {rank}: resuming from {ckpts[-1][1].name}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    metrics.parent.mkdir(parents=True, exist_ok=True)
    oom_at = int(os.environ.get("FAKE_OOM_AT_STEP", "0"))
    die_rank = int(os.environ.get("FAKE_DIE_RANK", "-1"))
    die_at = int(os.environ.get("FAKE_DIE_AT_STEP", "0"))
    for step in range(start + 1, total + 1):
        time.sleep(step_s)
        if step == oom_at:
            print("Traceback (most recent call last):", file=sys.stderr)
            print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", file=sys.stderr, flush=True)
            return 1
        if rank == die_rank and step == die_at:
            print(f"rank {rank}: dying", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        if dist is not None:
            t = torch.ones(1)
            dist.all_reduce(t)
        loss = 2.0 / step
        print(f"rank {rank}: step {step} loss {loss:.4f}", flush=True)
        if rank == 0:
            rec = {
                "step": step,
                "loss": loss,
                "lr": 1e-4,
                "tokens_per_second": 1000.0,
                "peak_memory_bytes": 1000000 * step,
                "epoch": step / total,
                "max_steps": total,
                "time": time.time(),
            }
            with metrics.open("a") as fh:
                fh.write(json.dumps(rec) + "\n")
            if step % save_steps == 0:
                (out / f"checkpoint-{step}").mkdir(exist_ok=True)
    if rank == 0:
        with metrics.open("a") as fh:
            fh.write(json.dumps({"event": "end", "status": "ok"}) + "\n")
    if dist is not None:
        dist.destroy_process_group()
    print(f"rank {rank}: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
