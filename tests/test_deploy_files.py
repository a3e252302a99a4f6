"""The container and service files, checked by reading them (no container engine runs here): what
they run exists in the CLI, what they copy exists in the repository, and the pieces agree."""

from __future__ import annotations

import configparser
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.cli import build_parser
from bot.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, arguments = pending.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "a continuation line at the end of the Dockerfile"
    return instructions


def _exec_form(arguments: str) -> list[str]:
    value = yaml.safe_load(arguments)  # JSON arrays are YAML
    assert isinstance(value, list), f"use the exec form: {arguments}"
    return [str(item) for item in value]


def _cli_accepts(argv: list[str]) -> None:
    assert argv[0] == "majicbot", argv
    build_parser().parse_args(argv[1:])  # exits (SystemExit) on an unknown command or option


def test_dockerfile_runs_majicbot_on_a_cuda_runtime_with_data_as_a_volume() -> None:
    instructions = _dockerfile()
    keywords = [keyword for keyword, _ in instructions]
    base = dict(instructions)["FROM"]
    assert re.fullmatch(r"nvidia/cuda:13\.0\.\d+-runtime-ubuntu\d+\.\d+", base), base
    workdirs = [arguments for keyword, arguments in instructions if keyword == "WORKDIR"]
    (volume,) = [_exec_form(arguments) for keyword, arguments in instructions if keyword == "VOLUME"]
    assert volume == [f"{workdirs[-1]}/data"]  # the default data/ under the final working directory
    entrypoint = _exec_form(dict(instructions)["ENTRYPOINT"])
    command = _exec_form(dict(instructions)["CMD"])
    assert entrypoint + command == ["majicbot", "run"]
    _cli_accepts(entrypoint + command)
    assert keywords.index("USER") > keywords.index("RUN")  # installs as root, runs as the user
    installs = [
        arguments for keyword, arguments in instructions if keyword == "RUN" and "pip install" in arguments
    ]
    assert installs and all(
        "-c constraints-gpu.txt" in line and "download.pytorch.org/whl/cu130" in line for line in installs
    )


def test_dockerfile_copies_what_exists_and_what_the_package_needs() -> None:
    copied: set[str] = set()
    for keyword, arguments in _dockerfile():
        if keyword == "COPY":
            *sources, _ = shlex.split(arguments)
            for source in sources:
                assert (ROOT / source).exists(), source
                copied.add(source)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {package.rstrip("*") for package in packages} <= copied
    assert {"pyproject.toml", "README.md", "constraints-gpu.txt"} <= copied


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_compose_runs_the_chat_side_one_engine_and_postgres() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"bot", "engine", "postgres"} <= set(services)
    assert services["bot"]["command"] == ["run", "--no-engine"]
    assert services["engine"]["command"] == ["engine"]
    for name, service in services.items():
        if "build" in service:
            _cli_accepts(["majicbot", *service["command"]])
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"
            else:
                assert source in compose["volumes"], f"{name} uses the undeclared volume {source}"
    data_mount = "data:/srv/majicbot/data"
    assert data_mount in services["bot"]["volumes"] and data_mount in services["engine"]["volumes"]
    (gpu,) = services["engine"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert "postgres" in compose["volumes"]


def test_compose_migrates_once_before_both_sides_start() -> None:
    services = _compose()["services"]
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("bot", "engine"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_compose_config_is_valid_and_names_the_postgres_service() -> None:
    compose = _compose()
    config = load_config(ROOT / "deploy" / "compose-config.toml", environ={})
    url = config.storage.database_url
    postgres = compose["services"]["postgres"]["environment"]
    assert url == (
        f"postgresql+asyncpg://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{postgres['POSTGRES_DB']}"
    )
    for name in ("bot", "engine", "migrate"):
        assert compose["services"][name]["environment"]["MAJICBOT_CONFIG"] == "/srv/majicbot/config.toml"


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "deploy" / "majicbot.service", encoding="utf-8")
    service = unit["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/.venv/bin/majicbot")
    _cli_accepts(["majicbot", *argv[1:]])
    assert argv[1] == "run"
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM" and service["KillMode"] == "mixed"
    assert "PrivateDevices" not in service  # the GPU's device files must stay visible
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in unit["Unit"]["After"]


def test_constraints_pin_the_tested_gpu_stack() -> None:
    pins = dict(
        line.split("==", 1)
        for line in (ROOT / "constraints-gpu.txt").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    )
    assert pins["torch"] == "2.11.0+cu130"  # docs/performance.md: torch 2.11.0+cu130
    assert pins["transformers"] == "5.17.0" and pins["diffsynth"] == "2.1.12"
    assert pins["modelscope"].startswith("1.4")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    gpu = pyproject["project"]["optional-dependencies"]["gpu"]
    assert f"diffsynth=={pins['diffsynth']}" in " ".join(gpu)
    carried = dict(
        line.split("==", 1)
        for line in (ROOT / "bench" / "wheels.txt").read_text(encoding="utf-8").splitlines()
        if "==" in line and not line.startswith("#")
    )
    for name in set(pins) & set(carried):  # what the benchmark installed is what users install
        assert pins[name] == carried[name], name
    performance = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    assert f"torch {pins['torch']}" in performance and f"transformers {pins['transformers']}" in performance


def _shell_blocks(markdown: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", markdown, flags=re.DOTALL)


def test_readme_quick_start_is_two_commands_and_ci_runs_the_second() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    run, test = (block.strip() for block in _shell_blocks(quick_start))
    assert "\n" not in run and "\n" not in test
    assert (
        "-c constraints-gpu.txt" in run and "--extra-index-url https://download.pytorch.org/whl/cu130" in run
    )
    assert run.endswith("majicbot run")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci == test
    assert ".venv/bin/mypy &&" in test, "CI type-checks (mypy strict, pyproject's [tool.mypy])"


@pytest.mark.parametrize("heading", ["Requirements", "Discord", "Telegram"])
def test_readme_has_the_setup_sections(heading: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(rf"^##+ .*{heading}", readme, flags=re.MULTILINE), heading
