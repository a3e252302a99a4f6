"""GPU benchmark of the engine on the cards it is for: one table, every configuration in a fresh process.

    python bench/engine_bench.py --model-dir /tmp/models --cards 12,8,6 --out results.jsonl

A card is simulated with bench/simulate_card.py (a copy of shared/tools/simulate_card.py): another process
holds the rest of the GPU, so this process's CUDA context and every allocation count, as on a real card,
and the figure "whole-card peak" is what that tool reports. 1024x1024, 20 steps unless said.

Configurations (each a fresh process; `--parts` picks which run):
  ref          DiffSynth's pipeline, everything resident in bf16, the whole GPU: the reference time, and the
               reference image for PSNR (prompt B, seed 2)
  card-N       the engine as a user runs it: the shipped config.example.toml's [engine] (no budget set), the
               real WorkerSupervisor and worker process, on a simulated N GB card. Load (timed, from the
               supervisor's start), image A (a first prompt: "first image" = load + A), image B (a new
               prompt and seed: "s/image"), B again (a reroll: same pixels?), then --big x --big.
  fp8-N, t5bf16-N   card-N with engine.matmul = "fp8", or engine.text_encoder_storage = "bf16" (parts
               "fp8", "t5bf16", or "variants" for both; on the first card)
  recipe-N     DiffSynth's own low-VRAM recipe (layer streaming, vram_limit = N - 2 GiB) on a simulated N GB
               card, one whole 20-step image after loading (minutes)
  generate-N   `majicbot generate` itself (the user's command) at --big x --big on a simulated N GB card
PSNR: each configuration's image B against ref's, same synthetic weights, prompt and seed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()  # before any heavy import: "ready" counts from the process's start
ROOT = Path(__file__).resolve().parents[1]
GIB = 1024**3
PROMPT_A = "a red fox in the snow, morning light, photograph"
PROMPT_B = "portrait of an old fisherman, dramatic light, 85mm"


def _vm_hwm_gib(pid: int) -> float:
    """Peak resident memory of a process (VmHWM: page-locked memory included)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    return float("nan")


def _save_png(image: Any, path: Path) -> None:
    image.save(path)


# -- children ------------------------------------------------------------------------------------
async def _ours(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from PIL import Image

    from engine.messages import GenerationRequest, LoadProgress
    from engine.settings import EngineSettings
    from engine.supervisor import WorkerSupervisor

    shipped = tomllib.loads((ROOT / "config.example.toml").read_text())["engine"]
    overrides = json.loads(args.overrides or "{}")
    settings = EngineSettings(**{**shipped, "model_dir": str(args.model_dir), **overrides})
    loads: list[LoadProgress] = []
    supervisor = WorkerSupervisor(settings, on_load_progress=loads.append)
    result: dict[str, Any] = {"overrides": overrides}
    started = time.perf_counter()
    ready = await supervisor.start()
    result["load_s"] = time.perf_counter() - started  # the worker's spawn, imports and loading
    result["ready_s"] = time.perf_counter() - STARTED
    result["worker_load_s"] = ready.load_seconds
    result["strategy"] = ready.strategy
    result["gpu"] = ready.device_name
    result["load_reports"] = len(loads)

    async def make(prompt: str, seed: int, size: int, job: int) -> tuple[float, Any, float]:
        request = GenerationRequest(prompt, "", seed, args.steps, size, size, 3.5)
        t0 = time.perf_counter()
        done = await supervisor.run(job, request)
        seconds = time.perf_counter() - t0
        image = Image.frombytes(done.image.mode, (done.image.width, done.image.height), done.image.pixels)
        return seconds, image, done.step_seconds

    try:
        result["first_image_s"], _, _ = await make(PROMPT_A, 1, args.size, 1)
        result["first_image_after_start_s"] = result["load_s"] + result["first_image_s"]
        result["image_s"], image_b, result["step_s"] = await make(PROMPT_B, 2, args.size, 2)
        result["reroll_s"], image_again, _ = await make(PROMPT_B, 2, args.size, 3)
        result["identical_pixels"] = image_b.tobytes() == image_again.tobytes()
        _save_png(image_b, args.work / f"{args.child}.png")
        if args.big:
            result["big_s"], big, _ = await make(PROMPT_A, 3, args.big, 4)
            result["big_size"] = f"{big.width}x{big.height}"
        result["worker_rss_peak_gib"] = _vm_hwm_gib(supervisor.pid or 0)
    finally:
        await supervisor.stop()
    return result


def _diffsynth_pipe(model_dir: Path, vram_limit_gib: float | None) -> Any:
    import torch
    from diffsynth.core import ModelConfig
    from diffsynth.pipelines.flux_image import FluxImagePipeline

    sys.path.insert(0, str(ROOT))
    from models.registry import model_paths

    p = model_paths(model_dir)
    vram: dict[str, Any] = {}
    if vram_limit_gib is not None:  # examples/flux/model_inference_low_vram in DiffSynth-Studio 2.x
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
        vram_limit=vram_limit_gib,
    )


def _diffsynth(args: argparse.Namespace, vram_limit_gib: float | None) -> dict[str, Any]:
    import torch

    result: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0)}
    t0 = time.perf_counter()
    pipe = _diffsynth_pipe(args.model_dir, vram_limit_gib)
    torch.cuda.synchronize()
    result["load_s"] = time.perf_counter() - t0  # DiffSynth's import and loading
    result["ready_s"] = time.perf_counter() - STARTED  # from the process's start, torch's import included

    def make(prompt: str, seed: int, steps: int) -> tuple[float, Any]:
        torch.cuda.synchronize()
        start = time.perf_counter()
        image = pipe(
            prompt=prompt,
            seed=seed,
            height=args.size,
            width=args.size,
            num_inference_steps=steps,
            embedded_guidance=3.5,
            rand_device="cpu",
        )
        torch.cuda.synchronize()
        return time.perf_counter() - start, image

    if vram_limit_gib is None:
        result["strategy"] = "diffsynth, all resident, bf16"
        result["first_image_s"], _ = make(PROMPT_A, 1, args.steps)
        result["image_s"], image = make(PROMPT_B, 2, args.steps)
    else:
        # Minutes per image: one whole image (--recipe-steps; 20 for the figure of record), also the first.
        result["strategy"] = f"diffsynth low-VRAM recipe, vram_limit {vram_limit_gib} GiB"
        seconds, image = make(PROMPT_B, 2, args.recipe_steps)
        result["first_image_s"] = seconds
        result["recipe_steps"] = args.recipe_steps
        if args.recipe_steps == args.steps:
            result["image_s"] = seconds
    result["first_image_after_start_s"] = result["load_s"] + result["first_image_s"]
    _save_png(image, args.work / f"{args.child}.png")
    result["rss_peak_gib"] = _vm_hwm_gib(os.getpid())
    return result


def child(args: argparse.Namespace) -> dict[str, Any]:
    kind, _, card = args.child.partition("-")
    if kind == "ref":
        return _diffsynth(args, None)
    if kind == "recipe":
        return _diffsynth(args, float(card) - 2.0)
    return asyncio.run(_ours(args))


# -- parent --------------------------------------------------------------------------------------
def _psnr(path: Path, ref: Path) -> float | None:
    from PIL import Image, ImageChops, ImageStat

    if not path.exists() or not ref.exists():
        return None
    a, b = Image.open(path).convert("RGB"), Image.open(ref).convert("RGB")
    if a.size != b.size:
        return None
    mse = sum(v**2 for v in ImageStat.Stat(ImageChops.difference(a, b)).rms) / 3
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def _run(name: str, cmd: list[str], args: argparse.Namespace, card: float | None) -> dict[str, Any]:
    figures = args.work / f"{name}.card.json"
    if card is not None:
        cmd = [
            sys.executable,
            str(ROOT / "bench" / "simulate_card.py"),
            f"{card:g}",
            "--json",
            str(figures),
            "--",
            *cmd,
        ]
    print(f"== {name}: {' '.join(cmd[-8:])}", flush=True)
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode == 0 and lines:
            row: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
        elif proc.returncode == 0:
            row = {}
        else:
            row = {"error": (proc.stderr[-1500:] or proc.stdout[-1500:])}
        with (args.work / "children.log").open("a") as log:
            log.write(
                f"\n===== {name} rc={proc.returncode}\n{proc.stdout[-60_000:]}\n{proc.stderr[-60_000:]}"
            )
    except subprocess.TimeoutExpired:
        row = {"error": f"timed out after {args.timeout} s"}
    row["config"] = name
    row["wall_s"] = time.perf_counter() - started
    if card is not None and figures.exists():
        sim = json.loads(figures.read_text())
        row.update({"card_free_gib": sim["free_at_start_gib"], "card_peak_gib": sim["peak_used_gib"]})
        row["headroom_gib"] = sim["headroom_gib"]
    with Path(args.out).open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)
    return row


def _child_cmd(
    name: str, args: argparse.Namespace, overrides: dict[str, Any] | None = None, big: int = 0
) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        name,
        "--model-dir",
        str(args.model_dir),
        "--work",
        str(args.work),
        "--size",
        str(args.size),
        "--steps",
        str(args.steps),
        "--recipe-steps",
        str(args.recipe_steps),
        "--big",
        str(big),
        "--overrides",
        json.dumps(overrides or {}),
    ]


def _table(rows: list[dict[str, Any]], work: Path) -> str:
    ref = next((r for r in rows if r["config"] == "ref" and "image_s" in r), None)
    ref_png = work / "ref.png"
    # A recipe's whole image (minutes) may come from a second run (`--table`); its load time is read
    # from the run of the row it is compared with.
    recipes = [r for r in rows if r["config"].startswith("recipe-") and "load_s" in r]

    def recipe_for(card: str, run: object, whole: bool) -> dict[str, Any] | None:
        found = [r for r in recipes if r["config"].split("-")[1] == card and ("image_s" in r or not whole)]
        same_run = [r for r in found if r.get("run") == run]
        return (same_run or found or [None])[0]

    head = (
        f"{'config':<11}{'s/image':>8}{'x ref':>7}{'recipe s':>9}{'x ref':>7}{'card peak':>10}{'headroom':>9}"
        f"{'host RSS':>9}{'ready s':>8}{'rec rdy':>9}{'1st img':>8}{'big s':>7}{'PSNR dB':>8}{'same px':>8}"
        "  strategy"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['config']:<11} FAILED: {r['error'][-300:]!r}")
            continue
        if "image_s" not in r and "load_s" in r:
            lines.append(
                f"{r['config']:<11} ready {r.get('ready_s', r['load_s']):.1f} s after start "
                f"(load {r['load_s']:.1f} s), a {r.get('recipe_steps')}-step image "
                f"{r['first_image_s']:.1f} s, card peak {r.get('card_peak_gib', float('nan')):.2f} GiB"
            )
            continue
        if "image_s" not in r:
            lines.append(
                f"{r['config']:<11} exit 0; card peak {r.get('card_peak_gib', float('nan')):.2f} GiB, "
                f"headroom {r.get('headroom_gib', float('nan')):.2f} GiB, {r['wall_s']:.1f} s"
            )
            continue
        card = r["config"].split("-")[1] if "-" in r["config"] else ""
        mine = not r["config"].startswith("recipe")
        rec = recipe_for(card, r.get("run"), whole=True) if mine else None
        rec_load = recipe_for(card, r.get("run"), whole=False) if mine else None
        ratio = r["image_s"] / ref["image_s"] if ref else float("nan")
        rec_s = rec.get("image_s", float("nan")) if rec else float("nan")
        rec_ready = rec_load.get("ready_s", rec_load["load_s"]) if rec_load else float("nan")
        rec_ratio = rec_s / ref["image_s"] if ref else float("nan")
        psnr = _psnr(work / f"{r['config']}.png", ref_png)
        rss = r.get("worker_rss_peak_gib", r.get("rss_peak_gib", float("nan")))
        lines.append(
            f"{r['config']:<11}{r['image_s']:8.2f}{ratio:6.2f}x"
            f"{rec_s:9.1f}{rec_ratio:6.1f}x"
            f"{r.get('card_peak_gib', float('nan')):10.2f}{r.get('headroom_gib', float('nan')):9.2f}"
            f"{rss:9.1f}{r.get('ready_s', r['load_s']):8.1f}{rec_ready:9.1f}"
            f"{r['first_image_after_start_s']:8.1f}{r.get('big_s', float('nan')):7.1f}"
            f"{(psnr if psnr is not None else float('nan')):8.1f}{r.get('identical_pixels', '-')!s:>8}  "
            f"{r.get('strategy', '')}"
        )
    return "\n".join(lines)


def parent(args: argparse.Namespace) -> int:
    args.work.mkdir(parents=True, exist_ok=True)
    parts = set(args.parts.split(","))
    cards = [float(c) for c in args.cards.split(",") if c]
    rows: list[dict[str, Any]] = []
    if "ref" in parts:
        rows.append(_run("ref", _child_cmd("ref", args), args, None))
    for card in cards if "ours" in parts else []:
        name = f"card-{card:g}"
        rows.append(_run(name, _child_cmd(name, args, big=args.big), args, card))
    variants = (("t5bf16", {"text_encoder_storage": "bf16"}), ("fp8", {"matmul": "fp8"}))
    for kind, overrides in variants if cards else ():
        if kind in parts or "variants" in parts:
            name = f"{kind}-{cards[0]:g}"
            rows.append(_run(name, _child_cmd(name, args, overrides), args, cards[0]))
    if "generate" in parts:
        card = cards[-1] if cards else 6.0
        config = args.work / "generate.toml"
        config.write_text(f'[engine]\nmodel_dir = "{args.model_dir}"\n')
        cmd = [
            sys.executable,
            "-m",
            "bot.cli",
            "generate",
            "a lighthouse on a cliff at dusk",
            "--config",
            str(config),
        ]
        cmd += [
            "--width",
            str(args.big),
            "--height",
            str(args.big),
            "--steps",
            str(args.steps),
            "-o",
            str(args.work / "generate.png"),
        ]
        rows.append(_run(f"generate-{card:g}", cmd, args, card))
    for card in [float(c) for c in args.recipe_cards.split(",") if c] if "recipe" in parts else []:
        name = f"recipe-{card:g}"
        rows.append(_run(name, _child_cmd(name, args), args, card))
    table = _table(rows, args.work)
    print(table)
    (args.work / "table.txt").write_text(table + "\n")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--out", default="bench-results.jsonl")
    ap.add_argument("--work", type=Path, default=Path("/tmp/majicbot-bench"))
    ap.add_argument("--cards", default="12,8,6")
    ap.add_argument("--recipe-cards", default="12,8")
    ap.add_argument("--parts", default="ref,ours,variants,generate,recipe")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--big", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--recipe-steps", type=int, default=20, help="fewer: the recipe's load time only")
    ap.add_argument("--timeout", type=float, default=420)
    ap.add_argument("--child", default="")
    ap.add_argument(
        "--table", nargs="+", type=Path, help="print one table from these result files (several runs)"
    )
    ap.add_argument("--overrides", default="")
    args = ap.parse_args()
    if args.child:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        os.environ.setdefault("DIFFSYNTH_SKIP_DOWNLOAD", "True")
        sys.path.insert(0, str(ROOT))
        print("RESULT " + json.dumps(child(args)), flush=True)
        return 0
    if args.table:
        rows = [
            {**json.loads(line), "run": run}
            for run, path in enumerate(args.table)
            for line in path.read_text().splitlines()
            if line.strip()
        ]
        table = _table(rows, args.work)
        print(table)
        (args.work / "table.txt").write_text(table + "\n")
        return 0
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
