"""`majicbot doctor`: is this machine ready to run majicbot? One line per check, with the fix when it fails.

    python        3.11 or newer
    torch         a CUDA build that the installed NVIDIA driver can run
    gpu           the configured device exists and has enough free memory
    host RAM      enough for what does not fit on the GPU (engine.host_memory)
    disk          room for the model files still to download
    model files   present and recognised (models.check)
    database      reachable and migrated
    <platform>    each enabled platform's token accepted by that platform (`PlatformSpec.check_token`)

Everything that needs a GPU or the network goes through `DoctorProbes`, so tests give fakes. `torch` is
asked in a child process (engine.gpu_probe): this process never imports it. `--no-engine` (a chat-only
host) skips the GPU, memory and model checks; `--no-chat` (an engine host) skips the tokens.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bot.config import Config
from engine.gpu_probe import GpuDevice, GpuProbe, probe_gpu
from engine.host_memory import HostMemory, estimated_need, read_meminfo, shortfall
from engine.memory_model import GIB
from models.check import FIX_COMMAND, check_models
from models.registry import APPROX_DOWNLOAD_BYTES
from storage.database import Database
from storage.database_errors import describe_database_error, shown_url, sqlite_file
from storage.schema_status import schema_status

MIN_PYTHON = (3, 11)
MIN_FREE_VRAM_BYTES = int(5.5 * GIB)  # a 6 GB card after the CUDA context: the smallest README supports
DISK_HEADROOM_BYTES = 2 * 10**9
DATABASE_TIMEOUT_S = 20.0  # images and the database grow after the models are in
GPU_INSTALL = (
    "pip install -e '.[gpu]' -c constraints-gpu.txt --extra-index-url https://download.pytorch.org/whl/cu130"
)


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    summary: str
    fix: str = ""

    def render(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        line = f"{mark} {self.name:<12} {self.summary}"
        return f"{line}; fix: {self.fix}" if self.fix and not self.ok else line


def _free_disk_bytes(path: Path) -> int:
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free


@dataclass(frozen=True, slots=True)
class DoctorProbes:
    """What the checks ask of the machine and the network; tests replace them."""

    python_version: tuple[int, int, int] = tuple(sys.version_info[:3])  # type: ignore[assignment]
    gpu: Callable[[], GpuProbe] = probe_gpu
    host_memory: Callable[[], HostMemory | None] = read_meminfo
    free_disk_bytes: Callable[[Path], int] = _free_disk_bytes


@dataclass(slots=True)
class Doctor:
    config: Config
    probes: DoctorProbes = field(default_factory=DoctorProbes)
    check_engine: bool = True
    check_chat: bool = True

    async def run(self, report: Callable[[CheckResult], None]) -> bool:
        """Run every check, hand each result to `report` as it comes; True when all passed."""
        results: list[CheckResult] = []

        def add(result: CheckResult) -> None:
            results.append(result)
            report(result)

        add(self.python())
        if self.check_engine:
            for result in await asyncio.to_thread(lambda: list(self._engine_checks())):
                add(result)
        add(await self.database())
        if self.check_chat:
            for result in await self.tokens():
                add(result)
        return all(result.ok for result in results)

    # -- the checks --------------------------------------------------------------------------------
    def python(self) -> CheckResult:
        version = ".".join(map(str, self.probes.python_version))
        if self.probes.python_version[:2] >= MIN_PYTHON:
            return CheckResult("python", True, version)
        return CheckResult(
            "python",
            False,
            f"{version} is too old; majicbot needs 3.11 or newer",
            "install Python 3.11+ and make the virtual environment with it",
        )

    def _engine_checks(self) -> Iterator[CheckResult]:
        engine = self.config.engine
        if not engine.device.startswith("cuda"):
            yield CheckResult("torch", True, f"skipped: engine.device is {engine.device!r}")
            yield CheckResult("gpu", True, f"skipped: engine.device is {engine.device!r}")
            device: GpuDevice | None = None
        else:
            probe = self.probes.gpu()
            yield self.torch(probe)
            gpu_result, device = self.gpu(probe)
            yield gpu_result
        yield self.host_ram(device)
        yield self.disk()
        yield self.model_files()

    def torch(self, probe: GpuProbe) -> CheckResult:
        if probe.torch_version is None:
            why = f" ({probe.problem})" if probe.problem else ""
            return CheckResult("torch", False, f"torch is not installed or does not import{why}", GPU_INSTALL)
        if probe.cuda_build is None:
            return CheckResult(
                "torch",
                False,
                f"torch {probe.torch_version} is a CPU-only build",
                f"reinstall it: {GPU_INSTALL}",
            )
        if not probe.cuda_available:
            built = f"torch {probe.torch_version} (built for CUDA {probe.cuda_build}) cannot use the GPU"
            if probe.driver_version is None:
                return CheckResult(
                    "torch",
                    False,
                    f"{built}: no NVIDIA driver found (nvidia-smi is missing)",
                    f"install the NVIDIA driver (one that supports CUDA {probe.cuda_build}); on WSL2, the "
                    "Windows driver",
                )
            if probe.driver_cuda is not None and _version(probe.driver_cuda) < _version(probe.cuda_build):
                return CheckResult(
                    "torch",
                    False,
                    f"{built}: driver {probe.driver_version} supports CUDA up to {probe.driver_cuda}",
                    f"update the NVIDIA driver to one for CUDA {probe.cuda_build}, or install torch built "
                    f"for CUDA {probe.driver_cuda} or older instead of constraints-gpu.txt's",
                )
            why = probe.problem or "CUDA is not available"
            return CheckResult(
                "torch",
                False,
                f"{built}: {why}",
                f"install an NVIDIA driver that supports CUDA {probe.cuda_build} (nvidia-smi shows the "
                "CUDA version the driver supports), or a torch build for your driver's CUDA version",
            )
        driver = f"driver {probe.driver_version}" if probe.driver_version else "driver"
        return CheckResult(
            "torch", True, f"torch {probe.torch_version}, CUDA {probe.cuda_build}, {driver} OK"
        )

    def gpu(self, probe: GpuProbe) -> tuple[CheckResult, GpuDevice | None]:
        engine = self.config.engine
        if not probe.cuda_available:
            return CheckResult("gpu", False, "not checked: torch cannot use CUDA (see above)"), None
        index = _device_index(engine.device)
        device = next((d for d in probe.devices if d.index == index), None)
        if device is None:
            seen = ", ".join(f"cuda:{d.index} {d.name}" for d in probe.devices) or "none"
            return CheckResult(
                "gpu",
                False,
                f"{engine.device} does not exist (devices: {seen})",
                "set engine.device to one of them",
            ), None
        usable = _usable_vram(device, engine.vram_budget_gib)
        summary = (
            f"{engine.device} {device.name}: {device.free_bytes / GIB:.1f} GiB free of "
            f"{device.total_bytes / GIB:.1f} GiB"
        )
        if engine.vram_budget_gib is not None:
            summary += f" (engine.vram_budget_gib {engine.vram_budget_gib:g})"
        if usable < MIN_FREE_VRAM_BYTES:
            return CheckResult(
                "gpu",
                False,
                f"{summary}; majicbot needs at least {MIN_FREE_VRAM_BYTES / GIB:.1f} GiB",
                "close what else uses the GPU (nvidia-smi lists it), or raise engine.vram_budget_gib",
            ), device
        return CheckResult("gpu", True, summary), device

    def host_ram(self, device: GpuDevice | None) -> CheckResult:
        memory = self.probes.host_memory()
        if memory is None:
            return CheckResult(
                "host RAM", False, "cannot read /proc/meminfo", "run majicbot on Linux or WSL2"
            )
        engine = self.config.engine
        vram = MIN_FREE_VRAM_BYTES if device is None else _usable_vram(device, engine.vram_budget_gib)
        need = estimated_need(vram, engine.max_pixels)
        summary = (
            f"{memory.available / GIB:.1f} GiB available of {memory.total / GIB:.1f} GiB; with "
            f"{vram / GIB:.1f} GiB of VRAM the engine needs about {need.describe()}"
        )
        if shortfall(need, memory) is not None:
            return CheckResult(
                "host RAM",
                False,
                summary,
                "close other programs, add RAM, or use a card with more free memory (more of the model "
                "stays on the GPU)",
            )
        return CheckResult("host RAM", True, summary)

    def disk(self) -> CheckResult:
        model_dir = self.config.engine.model_dir
        report = check_models(model_dir)
        present = sum(f.size_bytes for f in report.files if f.ok)
        to_download = 0 if report.complete else max(APPROX_DOWNLOAD_BYTES - present, 0)
        needed = to_download + DISK_HEADROOM_BYTES
        free = self.probes.free_disk_bytes(model_dir)
        summary = f"{free / 10**9:.1f} GB free at {model_dir}, {needed / 10**9:.1f} GB needed"
        if free < needed:
            return CheckResult(
                "disk", False, summary, "free space there, or point engine.model_dir at a larger disk"
            )
        return CheckResult("disk", True, summary)

    def model_files(self) -> CheckResult:
        engine = self.config.engine
        if engine.backend != "diffsynth":
            return CheckResult("model files", True, f"skipped: engine.backend is {engine.backend!r}")
        report = check_models(engine.model_dir)
        if report.complete:
            return CheckResult("model files", True, f"all present and recognised in {engine.model_dir}")
        problems = ", ".join(f"{f.entry.role} {f.status.value}" for f in report.problems)
        return CheckResult(
            "model files", False, f"{problems} in {engine.model_dir}", f"run `{FIX_COMMAND}` (it resumes)"
        )

    async def database(self) -> CheckResult:
        storage = self.config.storage
        url = storage.database_url
        where = shown_url(url)
        path = sqlite_file(url)
        if path is not None and not path.exists():
            return CheckResult(
                "database",
                False,
                f"{path} does not exist yet",
                "run `majicbot db upgrade` (`majicbot run` also creates it)",
            )
        database: Database | None = None
        try:
            database = Database(url, busy_timeout_ms=storage.busy_timeout_ms)
            async with asyncio.timeout(DATABASE_TIMEOUT_S):
                status = await schema_status(database)
        except TimeoutError:
            return CheckResult(
                "database",
                False,
                f"{where} did not answer within {DATABASE_TIMEOUT_S:.0f} s",
                "check the host, the network and that the server runs",
            )
        except Exception as error:
            message = describe_database_error(error, url)
            if message is None:
                message = f"cannot read {where}: {type(error).__name__}: {error}"
            return CheckResult("database", False, message)
        finally:
            if database is not None:
                await database.close()
        if status.from_a_newer_version:
            return CheckResult(
                "database",
                False,
                f"{where} was migrated by a newer majicbot (at {', '.join(status.current)})",
                "upgrade majicbot, or point storage.database_url at a database of this version",
            )
        if not status.up_to_date:
            at = ", ".join(status.current) or "no migration applied"
            return CheckResult(
                "database",
                False,
                f"{where} is at {at}, this version needs {', '.join(status.head)}",
                "run `majicbot db upgrade`",
            )
        return CheckResult("database", True, f"{where}, migrations up to date ({', '.join(status.head)})")

    async def tokens(self) -> list[CheckResult]:
        """Each enabled platform's token, asked of the platform (`PlatformSpec.check_token`)."""
        config = self.config
        results: list[CheckResult] = []
        for platform in config.enabled_platforms():
            verdict = await platform.check_token(config.section(platform))
            results.append(CheckResult(platform.name, verdict.accepted, verdict.detail))
        if not results:
            variables = " or ".join(platform.token_variable for platform in config.platforms)
            results.append(
                CheckResult(
                    "chat",
                    False,
                    "no chat platform token is configured",
                    f"set {variables} (or the config file's token); on an engine-only host use --no-chat",
                )
            )
        return results


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def _device_index(device: str) -> int:
    _, _, index = device.partition(":")
    return int(index) if index.isdigit() else 0


def _usable_vram(device: GpuDevice, budget_gib: float | None) -> int:
    return device.free_bytes if budget_gib is None else min(device.free_bytes, int(budget_gib * GIB))
