"""The `majicbot` command, run as a real subprocess the way an operator runs it."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from tests.support.cli import FAKE_MODELSCOPE, assert_friendly, majicbot, majicbot_on_a_terminal

TINY_ENGINE = '[engine]\nbackend = "tests.support.tiny_backend:create_backend"\ndevice = "cpu"\n'


def test_config_check_prints_effective_config_with_secrets_masked(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[telegram]\ntoken = "123456:SECRET-from-file"\n', encoding="utf-8")
    result = majicbot("config", "check", cwd=tmp_path, env={"MAJICBOT_DISCORD_TOKEN": "discord-SECRET-env"})
    assert result.returncode == 0, result.stderr
    assert '"token": "********"' in result.stdout
    assert "SECRET" not in result.stdout + result.stderr
    assert '"default_steps": 20' in result.stdout


def test_config_check_reports_key_value_and_expectation(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text("[engine]\ndefault_steps = 0\nbogus = 1\n", encoding="utf-8")
    result = majicbot("config", "check", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "engine.default_steps: 0 is below the minimum 1" in result.stderr
    assert "engine.bogus: unknown key" in result.stderr


def test_config_path_from_environment_variable(tmp_path: Path) -> None:
    path = tmp_path / "other.toml"
    path.write_text("[engine]\ndefault_steps = 9\n", encoding="utf-8")
    result = majicbot("config", "check", cwd=tmp_path, env={"MAJICBOT_CONFIG": str(path)})
    assert result.returncode == 0, result.stderr
    assert '"default_steps": 9' in result.stdout


def test_db_upgrade_creates_the_database(tmp_path: Path) -> None:
    db = tmp_path / "state" / "jobs.db"
    (tmp_path / "config.toml").write_text(
        f'[storage]\ndatabase_url = "sqlite+aiosqlite:///{db}"\n', encoding="utf-8"
    )
    for _ in range(2):  # the second run is a no-op
        result = majicbot("db", "upgrade", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    with sqlite3.connect(db) as connection:
        tables = {row[0] for row in connection.execute("select name from sqlite_master where type='table'")}
        assert connection.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert {"jobs", "alembic_version"} <= tables


def test_models_check_says_what_is_missing_and_how_to_fix_it(tmp_path: Path) -> None:
    result = majicbot("models", "check", cwd=tmp_path)
    assert result.returncode == 1
    assert "majicflus_v134.safetensors" in result.stdout
    assert "majicbot download" in result.stdout


def test_run_without_any_chat_adapter_refuses(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        '[engine]\nbackend = "tests.support.tiny_backend:create_backend"\ndevice = "cpu"\n', encoding="utf-8"
    )
    result = majicbot("run", cwd=tmp_path, timeout=60)
    assert result.returncode != 0
    assert "no chat adapter is configured" in result.stderr


@pytest.mark.timeout(180)
def test_generate_writes_a_png_with_metadata(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        '[engine]\nbackend = "tests.support.tiny_backend:create_backend"\ndevice = "cpu"\n'
        "[limits]\nmin_side = 64\n",
        encoding="utf-8",
    )
    out = tmp_path / "fox.png"
    args = (
        "generate",
        "a red fox",
        "--seed",
        "42",
        "--steps",
        "3",
        "--width",
        "64",
        "--height",
        "64",
        "-o",
        str(out),
    )
    result = majicbot(*args, cwd=tmp_path, timeout=150)
    assert result.returncode == 0, result.stderr
    from PIL import Image

    with Image.open(out) as image:
        assert image.size == (64, 64)
        assert image.info.get("prompt") == "a red fox"
        assert image.info.get("seed") == "42"
    first = out.read_bytes()
    again = majicbot(*args, cwd=tmp_path, timeout=150)
    assert again.returncode == 0, again.stderr
    assert out.read_bytes() == first  # same request and seed, same pixels


def test_generate_rejects_bad_input_with_a_clear_message(tmp_path: Path) -> None:
    result = majicbot("generate", "a fox", "--width", "1000", "--height", "1024", cwd=tmp_path)
    assert result.returncode == 1
    assert "16" in result.stderr


def test_version(tmp_path: Path) -> None:
    result = majicbot("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("majicbot 0.")


def test_config_check_names_the_file_it_read(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[engine]\ndefault_steps = 9\n", encoding="utf-8")
    result = majicbot("config", "check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"config OK: read {(tmp_path / 'config.toml').resolve()}" in result.stderr


def test_config_check_without_a_file_says_defaults_are_shown(tmp_path: Path) -> None:
    result = majicbot("config", "check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "config OK" not in result.stderr
    assert "no config file found" in result.stderr and "defaults" in result.stderr
    assert '"default_steps": 20' in result.stdout


@pytest.mark.timeout(180)
def test_generate_reads_imagine_flags_in_the_prompt(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        TINY_ENGINE + "[limits]\nmin_side = 64\nmax_side = 256\nmax_pixels = 65536\n", encoding="utf-8"
    )
    out = tmp_path / "fox.png"
    result = majicbot(
        "generate", "a fox --ar 16:9 --seed 7 --steps 2", "-o", str(out), cwd=tmp_path, timeout=150
    )
    assert result.returncode == 0, result.stderr
    from PIL import Image

    with Image.open(out) as image:
        # 16:9 is 1360x768, scaled down to the 256-pixel side limit: what /imagine would make.
        assert image.size == (256, 144)
        assert image.info.get("prompt") == "a fox"
        assert image.info.get("seed") == "7"
        assert image.info.get("steps") == "2"


def test_generate_refuses_what_imagine_refuses(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(TINY_ENGINE, encoding="utf-8")
    result = majicbot("generate", "a fox --ar 5:1", cwd=tmp_path)
    assert_friendly(result, "5:1")
    twice = majicbot("generate", "a fox --seed 3", "--seed", "4", cwd=tmp_path)
    assert_friendly(twice, "--seed is given twice")
    steps = majicbot("generate", "a fox", "--steps", "500", cwd=tmp_path)
    assert_friendly(steps, "--steps 500 is out of range")


def test_generate_without_model_files_says_to_download(tmp_path: Path) -> None:
    result = majicbot("generate", "a fox", cwd=tmp_path)
    assert_friendly(result, "majicbot download")


def test_download_logs_progress_when_not_a_terminal_and_resumes(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    env = {"FAKE_MODELSCOPE_LOG": str(log)}
    result = majicbot("download", cwd=tmp_path, env=env, python_path=[FAKE_MODELSCOPE])
    assert result.returncode == 0, result.stderr
    assert "[1/2] MAILAND/majicflus_v1" in result.stderr
    assert "downloading majicflus_v134.safetensors (11.1 GiB)" in result.stderr
    assert "downloaded majicflus_v134.safetensors: 11.1 GiB" in result.stderr
    assert "All model files are present and recognised." in result.stdout
    assert "DownloadProgress(" not in result.stdout + result.stderr
    again = majicbot("download", cwd=tmp_path, env=env, python_path=[FAKE_MODELSCOPE])
    assert again.returncode == 0, again.stderr
    assert "every model file is already in" in again.stderr
    assert len(log.read_text().splitlines()) == 2  # the second run fetched nothing


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("401", "401 Unauthorized"),
        ("403", "403 Forbidden"),
        ("offline", "cannot reach ModelScope"),
    ],
)
def test_download_failures_are_one_friendly_line(tmp_path: Path, mode: str, expected: str) -> None:
    result = majicbot("download", cwd=tmp_path, env={"FAKE_MODELSCOPE": mode}, python_path=[FAKE_MODELSCOPE])
    assert_friendly(result, expected)


def test_download_without_the_gpu_extra(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked" / "modelscope"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'modelscope'\", name='modelscope')\n", encoding="utf-8"
    )
    result = majicbot("download", cwd=tmp_path, python_path=[blocked.parent])
    assert_friendly(result, "pip install 'majicbot[gpu]'")


def test_json_log_lines(tmp_path: Path) -> None:
    result = majicbot("download", "--log-format", "json", cwd=tmp_path, python_path=[FAKE_MODELSCOPE])
    assert result.returncode == 0, result.stderr
    logged = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert any(line["message"].startswith("downloaded majicflus_v134.safetensors") for line in logged)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in logged)


def test_download_draws_a_bar_per_file_on_a_terminal(tmp_path: Path) -> None:
    returncode, shown = majicbot_on_a_terminal("download", cwd=tmp_path, python_path=[FAKE_MODELSCOPE])
    assert returncode == 0, shown
    for name in (
        "majicflus_v134.safetensors",
        "ae.safetensors",
        "text_encoder_2/model-00002-of-00002.safetensors",
    ):
        assert name in shown
    assert re.search(r"11\.1G/11\.1G \[[0-9:]+<[0-9:]+, +[0-9.]+[kMGT]?B/s\]", shown), (
        shown
    )  # bytes, time left, rate
    assert "downloading majicflus_v134.safetensors" not in shown  # bars, not log lines


@pytest.mark.timeout(180)
def test_generate_makes_n_images_from_an_image(tmp_path: Path) -> None:
    from PIL import Image, ImageStat

    (tmp_path / "config.toml").write_text(
        TINY_ENGINE + "[limits]\nmin_side = 64\nmax_side = 256\nmax_pixels = 65536\n", encoding="utf-8"
    )
    source = tmp_path / "start.jpg"
    Image.new("RGB", (300, 150), (0, 0, 250)).save(source)
    out = tmp_path / "fox.png"
    args = ("generate", "a fox --seed 7 --steps 2", "--n", "2", "--image", str(source), "--strength", "0.4")
    result = majicbot(*args, "-o", str(out), cwd=tmp_path, timeout=150)
    assert result.returncode == 0, result.stderr
    for index, seed in ((1, "7"), (2, "8")):
        with Image.open(tmp_path / f"fox-{index}.png") as image:
            # The image's 2:1 aspect ratio, scaled down to the 256-pixel side limit.
            assert image.size == (256, 128)
            assert (image.info.get("seed"), image.info.get("strength")) == (seed, "0.4")
            assert image.info.get("image") == f"{index} of 2"
            blue = image.convert("RGB").split()[2]
            assert ImageStat.Stat(blue).mean[0] > 140  # the blue start shows through
    assert not out.exists()


def test_generate_refuses_a_strength_without_an_image_and_too_many_images(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(TINY_ENGINE, encoding="utf-8")
    assert_friendly(majicbot("generate", "a fox", "--strength", "0.5", cwd=tmp_path), "--image")
    assert_friendly(majicbot("generate", "a fox", "--n", "9", cwd=tmp_path), "--n 9 is out of range")
    assert_friendly(
        majicbot("generate", "a fox", "--image", str(tmp_path / "missing.png"), cwd=tmp_path), "cannot read"
    )
