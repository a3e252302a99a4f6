"""The dependency rule of docs/architecture.md, checked file by file on the source (every import, also
those inside functions and under TYPE_CHECKING):

- bot -> engine, storage, models (models only for the CLI's download, check and doctor);
- engine -> models, storage, where only the claim loop's side imports storage: `engine/claim_loop.py`
  (the queue, images, signals) and, for `storage.jobs`' plain types only, `engine/stored_request.py`
  and `engine/generate.py`;
- the GPU worker process (`engine/worker.py` and everything it imports) imports neither storage nor bot;
- storage and models import none of the others; nobody imports bot;
- no import cycles between modules;
- a chat platform is its folder: no module outside `bot/<platform>/` names one (imports, names,
  attributes, or a string that uses its name as a key: "telegram.token", "MAJICBOT_DISCORD_TOKEN");
  prose in docstrings and texts may mention one.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "engine", "storage", "models")
ALLOWED: dict[str, frozenset[str]] = {
    "bot": frozenset({"bot", "engine", "storage", "models"}),
    "engine": frozenset({"engine", "models", "storage"}),
    "storage": frozenset({"storage"}),
    "models": frozenset({"models"}),
}
STORAGE_IN_ENGINE: dict[str, tuple[str, ...]] = {
    # file -> the storage modules it may import ("storage" = any)
    "engine/claim_loop.py": ("storage",),
    "engine/stored_request.py": ("storage.jobs",),
    "engine/generate.py": ("storage.jobs",),
}
WORKER_ENTRY = "engine.worker"
PLATFORM_FOLDERS = tuple(sorted(path.parent.name for path in (ROOT / "bot").glob("*/platform.py")))
"""Each `bot/<name>/` folder with a `platform.py` is a chat platform (`bot.platforms.discover`)."""
MIGRATIONS = "storage/migrations/versions/"  # history: written once, never edited


@dataclass(frozen=True)
class Import:
    file: str  # relative to the repository root
    line: int
    module: str  # the first-party module (or package) it names, dotted

    @property
    def package(self) -> str:
        return self.module.split(".")[0]

    def __str__(self) -> str:
        return f"{self.file}:{self.line} imports {self.module}"


def _source_files() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(path): path for path in _source_files()}


def _resolve(name: str) -> str:
    """The longest first-party module that `name` (a module or module.attribute) names."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(path: Path) -> list[Import]:
    """Every first-party import in one file (relative imports resolved), as modules."""
    relative = str(path.relative_to(ROOT))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=relative)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from bot import texts` names the module bot.texts; `from bot.texts import X` names bot.texts
            names = [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] in PACKAGES and (module := _resolve(name)):
                found.append(Import(relative, node.lineno, module))
    return found


def _broken_rules(path: Path) -> list[str]:
    relative = str(path.relative_to(ROOT))
    own = relative.split("/")[0]
    wrong: list[str] = []
    for imp in _imports(path):
        if imp.package not in ALLOWED[own]:
            wrong.append(f"{imp}: {own} may import only {', '.join(sorted(ALLOWED[own]))}")
        elif own == "engine" and imp.package == "storage":
            allowed = STORAGE_IN_ENGINE.get(relative)
            if allowed is None:
                wrong.append(f"{imp}: in engine only the claim loop's side may import storage")
            elif not any(imp.module == a or imp.module.startswith(a + ".") for a in allowed):
                wrong.append(f"{imp}: this file may import only {', '.join(allowed)} from storage")
    return wrong


@pytest.mark.parametrize("package", PACKAGES)
def test_every_file_follows_the_arrows(package: str) -> None:
    wrong = [line for path in sorted((ROOT / package).rglob("*.py")) for line in _broken_rules(path)]
    assert wrong == [], "\n".join(wrong)


def test_the_rule_catches_a_wrong_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker itself: a storage import in a worker-side engine file is named with file and line."""
    fake_root = tmp_path
    (fake_root / "engine").mkdir()
    bad = fake_root / "engine" / "worker.py"
    bad.write_text("import os\n\n\ndef f():\n    from storage.queue import JobQueue\n", encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake_root)
    monkeypatch.setitem(MODULES, "storage.queue", fake_root / "storage" / "queue.py")
    assert _broken_rules(bad) == [
        "engine/worker.py:5 imports storage.queue: in engine only the claim loop's side may import storage"
    ]


def _graph() -> dict[str, set[str]]:
    return {
        module: {imp.module for imp in _imports(path) if imp.module != module}
        for module, path in MODULES.items()
    }


def test_the_worker_process_imports_neither_storage_nor_bot() -> None:
    graph = _graph()
    seen: dict[str, str] = {WORKER_ENTRY: WORKER_ENTRY}  # module -> the module that imports it
    todo = [WORKER_ENTRY]
    while todo:
        module = todo.pop()
        for target in sorted(graph.get(module, ())):
            if target not in seen:
                seen[target] = module
                todo.append(target)
    wrong = sorted(
        f"{MODULES[seen[module]].relative_to(ROOT)} imports {module} (reached from {WORKER_ENTRY})"
        for module in seen
        if module.split(".")[0] in ("storage", "bot")
    )
    assert wrong == [], "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph())
    assert cycles == [], "modules that import each other: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_the_worker_process_loads_no_storage_or_chat_module() -> None:
    """What the worker process really loads at run time, beside the static check above."""
    code = (
        "import sys, engine.worker, engine.supervisor, engine.messages, engine.backend;"
        "names = ('storage', 'sqlalchemy', 'bot', 'discord', 'telegram');"
        "bad = sorted(m for m in names if m in sys.modules);"
        "print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""


def test_a_one_off_image_does_not_load_the_queue() -> None:
    """`majicbot generate` runs the worker without the queue: engine.generate must not pull in SQLAlchemy."""
    code = (
        "import sys, engine.generate;"
        "print(','.join(m for m in ('sqlalchemy', 'storage.queue', 'bot') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""


def _docstrings(tree: ast.AST) -> set[int]:
    """The string expressions that are documentation (module, class, function or attribute docs)."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


def _names_platform(text: str, platform: str) -> bool:
    """`text` uses the platform's name as a key (`telegram`, `telegram.token`, `MAJICBOT_TELEGRAM_TOKEN`,
    `'telegram'` in SQL); prose ("on Telegram, ...") is not a key."""
    name = re.escape(platform)
    return bool(
        re.fullmatch(name, text, re.IGNORECASE)
        or re.search(rf"(?<![\w-]){name}[._]\w|_{name}_|['\"]{name}['\"]", text, re.IGNORECASE)
    )


def _platform_mentions(path: Path, platforms: tuple[str, ...] = PLATFORM_FOLDERS) -> list[str]:
    """Where a file outside the platforms' folders names one of them."""
    relative = str(path.relative_to(ROOT))
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=relative)
    docs = _docstrings(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        for platform in platforms:
            what = None
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.module:
                    modules.append(node.module)
                    modules += [f"{node.module}.{alias.name}" for alias in node.names]
                parts = [module.split(".") for module in modules]
                if any(part[0] == platform or part[:2] == ["bot", platform] for part in parts):
                    what = "imports " + ", ".join(modules)
            elif isinstance(node, ast.Name | ast.Attribute):
                identifier = node.id if isinstance(node, ast.Name) else node.attr
                if platform in identifier.lower():
                    what = f"uses {identifier}"
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docs
                and _names_platform(node.value, platform)
            ):
                what = f"has {node.value[:60]!r}"
            if what:
                found.append(f"{relative}:{node.lineno} {what}: only bot/{platform}/ may name {platform}")
    return found


def _outside_the_platform_folders() -> list[Path]:
    return [
        path
        for path in _source_files()
        if not str(path.relative_to(ROOT)).startswith(MIGRATIONS)
        and not (path.parts[len(ROOT.parts)] == "bot" and path.parts[len(ROOT.parts) + 1] in PLATFORM_FOLDERS)
    ]


def test_no_module_outside_a_platform_folder_names_a_platform() -> None:
    """Adding a platform is adding its folder: config, CLI, doctor, app and storage loop over
    `bot.platforms`, and nothing outside a folder knows its name."""
    assert PLATFORM_FOLDERS, "no bot/<platform>/platform.py found"
    wrong = [line for path in _outside_the_platform_folders() for line in _platform_mentions(path)]
    assert wrong == [], "\n".join(wrong)


def test_the_platform_rule_catches_a_platform_named_outside_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bot").mkdir()
    bad = tmp_path / "bot" / "wiring.py"
    bad.write_text(
        '"""Prose may say Telegram."""\n\n'
        "from bot.telegram.frontend import TelegramFrontend\n"
        "import telegram.ext\n"
        "def f(config):\n"
        "    shown = 'posted on Telegram, as a reply'\n"
        "    return config.telegram.token, 'telegram.ext.Updater', 'MAJICBOT_TELEGRAM_TOKEN'\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    rule = ": only bot/telegram/ may name telegram"
    assert sorted(_platform_mentions(bad, ("telegram",))) == [
        f"bot/wiring.py:3 imports bot.telegram.frontend, bot.telegram.frontend.TelegramFrontend{rule}",
        f"bot/wiring.py:4 imports telegram.ext{rule}",
        f"bot/wiring.py:7 has 'MAJICBOT_TELEGRAM_TOKEN'{rule}",
        f"bot/wiring.py:7 has 'telegram.ext.Updater'{rule}",
        f"bot/wiring.py:7 uses telegram{rule}",
    ]
