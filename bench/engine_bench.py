"""GPU benchmark of the engine (issues 3 and 6): one table, every configuration in a fresh process.

    python bench/engine_bench.py --model-dir /tmp/models --out results.jsonl

Configurations (1024x1024, 20 steps unless told otherwise; budgets enforced with
torch.cuda.set_per_process_memory_fraction):
  ref-bf16      DiffSynth, everything resident in bf16 (the reference time)
  ours-N        our backend (engine.diffsynth_backend) with engine.vram_budget_gib = N ("nocap": unset)
  compiled-N    ours-N, with the torch.compile'd float8 quantisation among the measured matmul modes
  recipe-N      DiffSynth's official low-VRAM recipe with the process capped at N GiB, vram_limit N - 0.5;
                it is slow, so it runs --recipe-steps steps and its 20-step time is extrapolated from
                the measured per-step time (marked "~" in the table)
  queue-N       the application's path: 3 jobs queued in a SQLite JobQueue before a ClaimLoop starts,
                run back to back by the real WorkerSupervisor (worker process, our backend, budget N);
                per job its seconds, and between jobs the GPU's idle time (worker clock) and the claim
                loop's gap
Each ref/ours/recipe process: load (timed), image 1 (prompt A: the first image), image 2 (prompt B, new
seed: "s/image"), image 3 (prompt B again, same seed: a reroll; compared with image 2 pixel for pixel).
The recipe makes one short image only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GIB = 1024**3
PROMPT_A = "a red fox in the snow, morning light, photograph"
PROMPT_B = "portrait of an old fisherman, dramatic light, 85mm"
PROMPT_C = "a lighthouse on a cliff at dusk, oil painting"
QUEUE_WAIT_S = 150.0


class _ClaimLoopLog(logging.Handler):
    """Collects the claim loop's per-job measurements from its log lines (it keeps only the last)."""

    def __init__(self) -> None:
        super().__init__()
        self.gpu_idle_ms: dict[int, float] = {}
        self.claim_gap_ms: dict[int, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        args: tuple[Any, ...] = record.args if isinstance(record.args, tuple) else ()
        if len(args) != 2:
            return
        if "the GPU idled" in str(record.msg):
            self.gpu_idle_ms[int(args[0])] = float(args[1])
        elif "ms after the previous job" in str(record.msg):
            self.claim_gap_ms[int(args[0])] = float(args[1])


async def _queue_run(
    model_dir: Path, budget: float | None, size: int, steps: int, backend: str
) -> dict[str, Any]:
    """Three jobs through the queue, the claim loop and the worker process, as the application runs them."""
    import tempfile

    from engine.claim_loop import ClaimLoop
    from engine.settings import EngineSettings
    from engine.supervisor import WorkerSupervisor
    from storage.database import Database
    from storage.images import ImageStore
    from storage.jobs import ImageRequest, NewJob, Platform, Requester
    from storage.queue import JobQueue
    from storage.signals import LocalSignals, Topic

    tmp = Path(tempfile.mkdtemp(prefix="majicbot-bench-"))
    db = Database(f"sqlite+aiosqlite:///{tmp / 'bench.db'}")
    await db.upgrade()
    signals = LocalSignals()
    queue = JobQueue(db, signals, max_attempts=1)
    settings = EngineSettings(backend=backend, model_dir=model_dir, device="cuda:0", vram_budget_gib=budget)
    supervisor = WorkerSupervisor(settings)
    result: dict[str, Any] = {}
    started = time.perf_counter()
    ready = await supervisor.start()
    result["load_s"] = time.perf_counter() - started  # spawn, imports, load
    result["worker_load_s"] = ready.load_seconds
    result["strategy"] = ready.strategy
    result["gpu"] = ready.device_name
    requester = Requester(
        platform=Platform.TELEGRAM, chat_id="100", user_id="1", user_name="bench", guild_id=None
    )
    jobs = []
    for n, prompt in enumerate((PROMPT_A, PROMPT_B, PROMPT_C), start=1):
        request = ImageRequest(
            prompt=prompt, seed=n, steps=steps, width=size, height=size, guidance=3.5, negative_prompt=""
        )
        jobs.append((await queue.enqueue(NewJob(requester=requester, request=request))).job)
    watch = _ClaimLoopLog()
    logging.getLogger("engine.claim_loop").addHandler(watch)
    claim_loop = ClaimLoop(
        queue, ImageStore(tmp / "data"), signals, supervisor, claimer="bench:1", poll_interval_s=0.5
    )
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.get_running_loop().create_task(claim_loop.run(stop))
    try:
        async with asyncio.timeout(QUEUE_WAIT_S):
            while not all([(await queue.get(j.id)).is_final for j in jobs]):
                await signals.wait(Topic.UPDATED, 0.2)
        result["all_jobs_s"] = time.perf_counter() - started
    finally:
        stop.set()
        await task
        await supervisor.stop()
        await db.close()
    done = [await queue.get(j.id) for j in jobs]
    result["jobs"] = [
        {
            "job": j.id,
            "status": j.status.value,
            "seconds": j.duration_s,
            "step_s": j.step_seconds,
            "gpu_idle_before_ms": watch.gpu_idle_ms.get(j.id),
            "claim_gap_before_ms": watch.claim_gap_ms.get(j.id),
        }
        for j in done
    ]
    result["last_gpu_idle_ms"] = (
        None if claim_loop.last_gpu_idle_s is None else claim_loop.last_gpu_idle_s * 1000
    )
    result["last_gap_ms"] = None if claim_loop.last_gap_s is None else claim_loop.last_gap_s * 1000
    idle = [v for v in watch.gpu_idle_ms.values()]
    result["max_gpu_idle_ms"] = max(idle) if idle else None
    result["all_done"] = all(j.status.value == "done" for j in done)
    return result


def _cap(budget_gib: float | None) -> None:
    import torch

    if budget_gib is None:
        return
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, budget_gib * GIB / total), 0)


def _diffsynth_pipe(model_dir: Path, recipe_limit_gib: float | None) -> Any:
    import torch
    from diffsynth.core import ModelConfig
    from diffsynth.pipelines.flux_image import FluxImagePipeline

    sys.path.insert(0, str(ROOT))
    from models.registry import model_paths

    p = model_paths(model_dir)
    if recipe_limit_gib is None:
        vram: dict[str, Any] = {}
    else:
        # examples/flux/model_inference_low_vram in DiffSynth-Studio 2.x.
        vram = {
            "offload_dtype": torch.float8_e4m3fn,
            "offload_device": "cpu",
            "onload_dtype": torch.float8_e4m3fn,
            "onload_device": "cpu",
            "preparing_dtype": torch.float8_e4m3fn,
            "preparing_device": "cuda",
            "computation_dtype": torch.bfloat16,
            "computation_device": "cuda",
        }
    configs = [
        ModelConfig(path=str(p.dit), **vram),
        ModelConfig(path=str(p.text_encoder_clip), **vram),
        ModelConfig(path=[str(x) for x in p.text_encoder_t5], **vram),
        ModelConfig(path=str(p.vae), **vram),
    ]
    return FluxImagePipeline.from_pretrained(
        torch_dtype=torch.bfloat16,
        device="cuda",
        model_configs=configs,
        tokenizer_1_config=ModelConfig(path=str(p.tokenizer_clip)),
        tokenizer_2_config=ModelConfig(path=str(p.tokenizer_t5)),
        vram_limit=recipe_limit_gib,
    )


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Run one configuration in this (fresh) process; returns its figures."""
    os.environ.setdefault("DIFFSYNTH_SKIP_DOWNLOAD", "True")
    import torch

    name: str = args.child
    kind, _, budget_text = name.partition("-")
    budget = None if budget_text in ("", "nocap", "bf16") else float(budget_text)
    result: dict[str, Any] = {"config": name, "budget_gib": budget}
    size, steps = args.size, args.steps
    run_steps = args.recipe_steps if kind == "recipe" else steps
    step_times: list[float] = []

    if kind == "queue":
        # This process stays off the GPU, like the application's chat process: the worker owns it.
        result.update(asyncio.run(_queue_run(args.model_dir, budget, size, steps, args.backend)))
        return result
    result["gpu"] = torch.cuda.get_device_name(0)
    import numpy as np

    t0 = time.perf_counter()
    if kind in ("ours", "compiled"):
        import engine.diffsynth_backend
        from engine.diffsynth_backend import create_backend
        from engine.messages import GenerationRequest
        from engine.settings import EngineSettings

        engine.diffsynth_backend.COMPILED_QUANTISATION = kind == "compiled"
        settings = EngineSettings(model_dir=args.model_dir, device="cuda:0", vram_budget_gib=budget)
        backend = create_backend(settings)

        def make(prompt: str, seed: int) -> Any:
            req = GenerationRequest(prompt, "", seed, run_steps, size, size, 3.5)
            last = [time.perf_counter()]

            def on_step(step: int, total: int) -> None:
                now = time.perf_counter()
                step_times.append(now - last[0])
                last[0] = now

            return backend.generate(req, on_step)

        result["strategy"] = backend.describe()[1]
        result["matmul"] = backend.matmul_choice.summary()
        result["matmul_compile_s"] = backend.matmul_choice.compile_seconds
        result["plan_peak_gib"] = backend.plan.peak_bytes / GIB
        result["dit_streamed_gib_per_step"] = backend.plan.dit.streamed_bytes / GIB
    else:
        _cap(budget)
        limit = None if kind == "ref" else budget - 0.5  # type: ignore[operator]
        pipe = _diffsynth_pipe(args.model_dir, limit)

        def make(prompt: str, seed: int) -> Any:
            def bar(iterable: Any) -> Any:
                last = time.perf_counter()
                for item in iterable:
                    yield item
                    torch.cuda.synchronize()
                    now = time.perf_counter()
                    step_times.append(now - last)
                    last = now

            return pipe(
                prompt=prompt,
                seed=seed,
                height=size,
                width=size,
                num_inference_steps=run_steps,
                embedded_guidance=3.5,
                rand_device="cpu",
                progress_bar_cmd=bar,
            )

        result["strategy"] = (
            "diffsynth bf16 resident" if kind == "ref" else f"diffsynth recipe vram_limit={limit}"
        )
    torch.cuda.synchronize()
    result["load_s"] = time.perf_counter() - t0
    result["load_peak_reserved_gib"] = torch.cuda.max_memory_reserved() / GIB

    def timed(prompt: str, seed: int) -> tuple[float, Any, list[float]]:
        del step_times[:]
        torch.cuda.synchronize()
        start = time.perf_counter()
        image = make(prompt, seed)
        torch.cuda.synchronize()
        return time.perf_counter() - start, image, list(step_times)

    if kind == "recipe":
        # Minutes per image at full length: one short image is both the first and the measured one
        # (the recipe re-uploads its weights on every call, so a warm-up changes little).
        t_new, img_new, steps_new = timed(PROMPT_B, 2)
        t_first = t_new
    else:
        t_first, _, _ = timed(PROMPT_A, 1)
        t_new, img_new, steps_new = timed(PROMPT_B, 2)
    result["first_image_s"] = t_first
    result["first_image_after_start_s"] = result["load_s"] + t_first
    result["step_s_median"] = float(np.median(steps_new))
    if kind == "recipe":
        result["measured_steps"] = run_steps
        result["measured_image_s"] = t_new
        # Outside-the-loop time (text encoders, VAE, uploads) plus 20 steps at the measured rate.
        result["image_s"] = t_new - sum(steps_new) + steps * result["step_s_median"]
        result["extrapolated"] = True
    else:
        result["image_s"] = t_new
        t_reroll, img_reroll, _ = timed(PROMPT_B, 2)
        result["reroll_s"] = t_reroll
        a, b = np.asarray(img_new), np.asarray(img_reroll)
        result["identical_pixels"] = bool(a.shape == b.shape and (a == b).all())
        result["image_mean"] = float(a.mean())
    result["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / GIB
    result["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / GIB
    result["peak_host_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB
    if budget is not None:
        result["under_cap"] = result["peak_reserved_gib"] <= budget
    return result


def _table(rows: list[dict[str, Any]]) -> str:
    ref = next((r["image_s"] for r in rows if r.get("config") == "ref-bf16" and "image_s" in r), None)
    by_budget = {}
    for r in rows:
        if r.get("config", "").startswith("recipe-") and "image_s" in r:
            by_budget[r["budget_gib"]] = r["image_s"]
    head = (
        f"{'config':<12}{'s/image':>9}{'x ref':>7}{'recipe s':>10}{'vs recipe':>10}{'peak res GiB':>13}"
        f"{'load s':>8}{'1st img s':>10}{'reroll s':>9}{'host GiB':>9}  same pixels / strategy"
    )
    lines = [head, "-" * len(head)]
    queued = [r for r in rows if r.get("config", "").startswith("queue-") and "error" not in r]
    for r in rows:
        if r in queued:
            continue
        if "error" in r:
            lines.append(f"{r['config']:<12} FAILED: {r['error'][-150:]}")
            continue
        approx = "~" if r.get("extrapolated") else " "
        ratio = f"{r['image_s'] / ref:6.2f}x" if ref else "     -"
        rec = by_budget.get(r.get("budget_gib")) if r["config"].startswith(("ours-", "compiled-")) else None
        rec_s = f"~{rec:8.1f}" if rec else "        -"
        vs = f"{rec / r['image_s']:8.1f}x" if rec else "        -"
        lines.append(
            f"{r['config']:<12}{approx}{r['image_s']:8.2f}{ratio:>7}{rec_s:>10}{vs:>10}"
            f"{r['peak_reserved_gib']:13.2f}{r['load_s']:8.1f}{r['first_image_s']:10.2f}"
            f"{r.get('reroll_s', float('nan')):9.2f}{r['peak_host_rss_gib']:9.1f}  "
            f"{r.get('identical_pixels', '-')} / {r['strategy']}"
        )
    if queued:
        lines += ["", _queue_table(queued)]
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _queue_table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'config':<12}{'load s':>8}  {'s per job':<20}{'GPU idle between, ms':<24}"
        f"{'claim gap, ms':<20}strategy"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        jobs = r["jobs"]
        secs = " ".join(f"{j['seconds']:.2f}" if j["seconds"] else "-" for j in jobs)
        idle = " ".join(_ms(j["gpu_idle_before_ms"]) for j in jobs[1:])
        gaps = " ".join(_ms(j["claim_gap_before_ms"]) for j in jobs[1:])
        lines.append(f"{r['config']:<12}{r['load_s']:8.1f}  {secs:<20}{idle:<24}{gaps:<20}{r['strategy']}")
    return "\n".join(lines)


def parent(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for config in args.configs.split(","):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            config,
            "--model-dir",
            str(args.model_dir),
            "--size",
            str(args.size),
            "--steps",
            str(args.steps),
            "--recipe-steps",
            str(args.recipe_steps),
            "--backend",
            args.backend,
        ]
        started = time.perf_counter()
        print(f"== {config}", flush=True)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode == 0 and lines:
                row = json.loads(lines[-1][len("RESULT ") :])
            else:
                row = {"config": config, "error": proc.stderr[-2000:] or proc.stdout[-2000:]}
            if args.log_dir:
                tail = f"{proc.stdout[-100_000:]}\n{proc.stderr[-100_000:]}"
                with (Path(args.log_dir) / "children.log").open("a") as log:
                    log.write(f"\n===== {config} rc={proc.returncode}\n{tail}")
        except subprocess.TimeoutExpired:
            row = {"config": config, "error": f"timed out after {args.timeout} s"}
        row["wall_s"] = time.perf_counter() - started
        rows.append(row)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    table = _table(rows)
    print(table)
    (out.parent / "table.txt").write_text(table + "\n")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--out", default="bench-results.jsonl")
    ap.add_argument("--log-dir", default="")
    ap.add_argument("--configs", default="ref-bf16,ours-nocap,ours-24,ours-12,ours-8,recipe-12,recipe-8")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--recipe-steps", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=240)
    ap.add_argument("--child", default="")
    ap.add_argument(
        "--backend",
        default="diffsynth",
        help="engine.backend of the queue-N configurations (a dry run on CPU: "
        "tests.support.tiny_backend:create_backend)",
    )
    args = ap.parse_args()
    if args.child:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        sys.path.insert(0, str(ROOT))
        print("RESULT " + json.dumps(child(args)), flush=True)
        return 0
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
