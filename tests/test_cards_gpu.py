"""`majicbot generate` as a user runs it, on a simulated 8 GB card: 2048x2048 with the shipped settings.

Marked `gpu`; needs the full-size model set (`bench/make_synthetic_flux.py --out DIR --dit-dtype fp8`)
named by MAJICBOT_GPU_MODEL_DIR. `bench/simulate_card.py` holds the rest of the GPU in another process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = os.environ.get("MAJICBOT_GPU_MODEL_DIR", "")


@pytest.mark.skipif(not MODEL_DIR, reason="set MAJICBOT_GPU_MODEL_DIR to a full-size model set")
def test_2048_square_on_an_8_gb_card(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[engine]\nmodel_dir = "{MODEL_DIR}"\n')
    figures = tmp_path / "card.json"
    out = tmp_path / "big.png"
    cmd = [sys.executable, str(ROOT / "bench" / "simulate_card.py"), "8", "--json", str(figures), "--"]
    cmd += [sys.executable, "-m", "bot.cli", "generate", "a harbour at night", "--config", str(config)]
    cmd += ["--width", "2048", "--height", "2048", "--steps", "2", "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    card = json.loads(figures.read_text())
    assert card["headroom_gib"] >= 0.25, card
    from PIL import Image

    assert Image.open(out).size == (2048, 2048)
