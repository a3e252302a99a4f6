"""bot.doctor: one line per check with the fix when it fails; exit 0 only when all pass.

GPU and host figures come from fakes (no GPU exists here); the database is a real SQLite file; tokens
are checked against the Telegram and Discord emulators over loopback sockets.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import Config
from bot.discord.settings import DiscordSettings
from bot.doctor import CheckResult, Doctor, DoctorProbes
from bot.telegram.settings import TelegramSettings
from engine.gpu_probe import GpuDevice, GpuProbe
from engine.host_memory import HostMemory
from engine.memory_model import GIB
from engine.settings import EngineSettings
from storage.database import Database
from storage.settings import StorageSettings
from tests.support.cli import FAKE_MODELSCOPE, majicbot
from tests.support.discord_emulator import DiscordEmulator
from tests.support.model_files import write_set
from tests.support.telegram_emulator import TelegramEmulator
from tests.support.telegram_harness import TOKEN as TELEGRAM_TOKEN

FAKE_TORCH = FAKE_MODELSCOPE.parent / "fake_torch"
RTX_4070 = GpuDevice(0, "NVIDIA GeForce RTX 4070", int(11.5 * GIB), 12 * GIB)
GOOD_GPU = GpuProbe("2.11.0+cu130", "13.0", True, (RTX_4070,), "")


def _probes(**overrides: Any) -> DoctorProbes:
    values: dict[str, Any] = {
        "python_version": (3, 11, 9),
        "gpu": lambda: GOOD_GPU,
        "host_memory": lambda: HostMemory(64 * GIB, 48 * GIB, 0),
        "free_disk_bytes": lambda path: 500 * 10**9,
    }
    values.update(overrides)
    return DoctorProbes(**values)


def _config(tmp_path: Path, **sections: Any) -> Config:
    engine = sections.pop("engine", EngineSettings(model_dir=tmp_path / "models"))
    return Config(
        storage=StorageSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'majicbot.db'}"),
        engine=engine,
        **sections,
    )


async def _migrate(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'majicbot.db'}")
    try:
        await database.upgrade()
    finally:
        await database.close()


def _by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {result.name: result for result in results}


async def _run(doctor: Doctor) -> tuple[bool, dict[str, CheckResult]]:
    results: list[CheckResult] = []
    healthy = await doctor.run(results.append)
    return healthy, _by_name(results)


# -- one check at a time ---------------------------------------------------------------------------
def test_python_too_old(tmp_path: Path) -> None:
    result = Doctor(_config(tmp_path), _probes(python_version=(3, 10, 12))).python()
    assert not result.ok
    assert "3.10.12 is too old" in result.render() and "fix: install Python 3.11+" in result.render()


@pytest.mark.parametrize(
    ("probe", "expected"),
    [
        (GpuProbe(None, None, False, (), "ModuleNotFoundError: No module named 'torch'"), "not installed"),
        (GpuProbe("2.11.0+cpu", None, False, (), ""), "CPU-only build"),
        (
            GpuProbe(
                "2.11.0+cu130",
                "13.0",
                False,
                (),
                "The NVIDIA driver on your system is too old",
                "580.65",
                "13.0",
            ),
            "driver on your system is too old",
        ),
    ],
)
def test_torch_that_cannot_use_the_gpu(tmp_path: Path, probe: GpuProbe, expected: str) -> None:
    result = Doctor(_config(tmp_path)).torch(probe)
    assert not result.ok
    line = result.render()
    assert expected in line
    assert "fix:" in line and "\n" not in line


def test_the_driver_behind_a_failed_cuda(tmp_path: Path) -> None:
    doctor = Doctor(_config(tmp_path))
    old = doctor.torch(GpuProbe("2.11.0+cu130", "13.0", False, (), "", "550.54.14", "12.4"))
    assert not old.ok and "driver 550.54.14 supports CUDA up to 12.4" in old.summary
    assert "update the NVIDIA driver to one for CUDA 13.0" in old.fix
    absent = doctor.torch(GpuProbe("2.11.0+cu130", "13.0", False, (), ""))
    assert not absent.ok and "no NVIDIA driver found" in absent.summary and "WSL2" in absent.fix


def test_torch_and_gpu_that_work(tmp_path: Path) -> None:
    doctor = Doctor(_config(tmp_path))
    assert doctor.torch(GOOD_GPU).ok
    gpu, device = doctor.gpu(GOOD_GPU)
    assert gpu.ok and device == RTX_4070
    assert "NVIDIA GeForce RTX 4070: 11.5 GiB free of 12.0 GiB" in gpu.summary


def test_a_gpu_too_full_or_absent(tmp_path: Path) -> None:
    busy = GpuProbe("2.11.0+cu130", "13.0", True, (GpuDevice(0, "RTX 3060", 3 * GIB, 12 * GIB),), "")
    result, _ = Doctor(_config(tmp_path)).gpu(busy)
    assert not result.ok and "nvidia-smi" in result.fix
    other = _config(tmp_path, engine=EngineSettings(device="cuda:1"))
    absent, device = Doctor(other).gpu(GOOD_GPU)
    assert not absent.ok and device is None
    assert "cuda:1 does not exist (devices: cuda:0 NVIDIA GeForce RTX 4070)" in absent.summary


def test_host_ram_against_the_engine_needs(tmp_path: Path) -> None:
    small = Doctor(_config(tmp_path), _probes(host_memory=lambda: HostMemory(16 * GIB, 8 * GIB, 0)))
    result = small.host_ram(RTX_4070)
    assert not result.ok
    assert "8.0 GiB available of 16.0 GiB" in result.summary and "add RAM" in result.fix
    assert "the engine needs about 11.7 GiB (9.2 GiB of weights streamed" in result.summary
    assert Doctor(_config(tmp_path), _probes()).host_ram(RTX_4070).ok


def test_disk_needs_room_for_what_is_left_to_download(tmp_path: Path) -> None:
    cramped = Doctor(_config(tmp_path), _probes(free_disk_bytes=lambda path: 10 * 10**9))
    result = cramped.disk()
    assert not result.ok and "35.0 GB needed" in result.summary
    write_set(tmp_path / "models")  # the files are in: only headroom is needed
    assert cramped.disk().ok


def test_model_files(tmp_path: Path) -> None:
    doctor = Doctor(_config(tmp_path))
    missing = doctor.model_files()
    assert not missing.ok and "majicbot download" in missing.fix and "dit missing" in missing.summary
    write_set(tmp_path / "models")
    assert doctor.model_files().ok


async def test_database_missing_unmigrated_broken_and_ready(tmp_path: Path) -> None:
    doctor = Doctor(_config(tmp_path))
    missing = await doctor.database()
    assert not missing.ok and "majicbot db upgrade" in missing.fix
    with sqlite3.connect(tmp_path / "majicbot.db") as connection:
        connection.execute("create table unrelated (x)")
    unmigrated = await doctor.database()
    assert not unmigrated.ok and "no migration applied" in unmigrated.summary
    assert unmigrated.fix == "run `majicbot db upgrade`"
    await _migrate(tmp_path)
    ready = await doctor.database()
    assert ready.ok and "migrations up to date" in ready.summary
    with sqlite3.connect(tmp_path / "majicbot.db") as connection:
        connection.execute("update alembic_version set version_num = '9999_future'")
    newer = await doctor.database()
    assert not newer.ok and "migrated by a newer majicbot" in newer.summary
    assert "upgrade majicbot" in newer.fix
    (tmp_path / "majicbot.db").write_bytes(b"garbage" * 500)
    broken = await doctor.database()
    assert not broken.ok and "is damaged or is not a SQLite database" in broken.summary


# -- tokens against the emulators -----------------------------------------------------------------
@pytest.fixture
async def discord_emulator() -> AsyncIterator[DiscordEmulator]:
    emulator = DiscordEmulator(token="MTIz.discord-doctor-token")
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


async def test_tokens_accepted_and_refused(
    tmp_path: Path, emulator: TelegramEmulator, discord_emulator: DiscordEmulator
) -> None:
    def configured(telegram_token: str, discord_token: str) -> Config:
        return _config(
            tmp_path,
            telegram=TelegramSettings(token=telegram_token, base_url=emulator.base_url),  # type: ignore[arg-type]
            discord=DiscordSettings(token=discord_token, api_base_url=discord_emulator.api_base_url),  # type: ignore[arg-type]
        )

    async with asyncio.timeout(30):
        good = _by_name(await Doctor(configured(TELEGRAM_TOKEN, discord_emulator.token)).tokens())
        bad = _by_name(await Doctor(configured("123:wrong-token", "wrong.discord.token")).tokens())
    assert good["telegram"].ok and good["telegram"].summary.startswith("@")
    assert good["discord"].ok
    assert not bad["telegram"].ok and "Telegram rejected the token (401)" in bad["telegram"].render()
    assert (
        not bad["discord"].ok and "Discord rejected the token (401 Unauthorized)" in bad["discord"].render()
    )
    assert "wrong-token" not in bad["telegram"].render()


async def test_an_unreachable_platform(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        telegram=TelegramSettings(token="123:abcdef-token", base_url="http://127.0.0.1:9/bot"),  # type: ignore[arg-type]
    )
    async with asyncio.timeout(30):
        (result,) = await Doctor(config).tokens()
    assert not result.ok
    assert "cannot reach the Telegram Bot API at http://127.0.0.1:9" in result.summary
    assert "abcdef" not in result.render()


async def test_no_token_fails_unless_chat_is_skipped(tmp_path: Path) -> None:
    (result,) = await Doctor(_config(tmp_path)).tokens()
    assert not result.ok and "--no-chat" in result.fix


# -- the whole run ---------------------------------------------------------------------------------
async def test_all_pass_only_when_every_check_passes(tmp_path: Path, emulator: TelegramEmulator) -> None:
    await _migrate(tmp_path)
    write_set(tmp_path / "models")
    config = _config(
        tmp_path,
        telegram=TelegramSettings(token=TELEGRAM_TOKEN, base_url=emulator.base_url),  # type: ignore[arg-type]
    )
    async with asyncio.timeout(30):
        healthy, results = await _run(Doctor(config, _probes()))
        assert healthy, [r.render() for r in results.values()]
        assert list(results) == [
            "python", "torch", "gpu", "host RAM", "disk", "model files", "database", "telegram"
        ]  # fmt: skip
        unhealthy, results = await _run(
            Doctor(config, _probes(gpu=lambda: GpuProbe("2.11.0+cpu", None, False, (), "")))
        )
    assert not unhealthy
    assert not results["torch"].ok and not results["gpu"].ok and results["database"].ok


# -- the command ------------------------------------------------------------------------------------
async def test_doctor_command_passes_on_a_ready_chat_host(tmp_path: Path, emulator: TelegramEmulator) -> None:
    await _migrate(tmp_path)
    (tmp_path / "config.toml").write_text(
        f'[storage]\ndatabase_url = "sqlite+aiosqlite:///{tmp_path / "majicbot.db"}"\n'
        f'[telegram]\nbase_url = "{emulator.base_url}"\n',
        encoding="utf-8",
    )
    result = await asyncio.to_thread(
        majicbot, "doctor", "--no-engine", cwd=tmp_path, env={"MAJICBOT_TELEGRAM_TOKEN": TELEGRAM_TOKEN}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == ["ok"] * 3  # python, database, telegram
    assert lines[-1] == "all checks passed"
    assert TELEGRAM_TOKEN not in result.stdout + result.stderr


def test_doctor_command_on_a_machine_whose_driver_is_too_old(tmp_path: Path) -> None:
    path = os.pathsep.join([str(FAKE_TORCH.parent / "fake_nvidia_smi"), os.environ["PATH"]])
    result = majicbot(
        "doctor",
        "--no-chat",
        cwd=tmp_path,
        env={"FAKE_TORCH": "old-driver", "PATH": path},
        python_path=[FAKE_TORCH],
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith(("ok", "FAIL"))}
    assert lines["torch"].startswith("FAIL") and "driver 550.54.14 supports CUDA up to 12.4" in lines["torch"]
    assert "fix: update the NVIDIA driver to one for CUDA 13.0" in lines["torch"]
    assert lines["model"].startswith("FAIL") and "fix: run `majicbot download`" in lines["model"]
    assert lines["database"].startswith("FAIL")
    assert result.stdout.splitlines()[-1] == "some checks failed: see the fixes above"
