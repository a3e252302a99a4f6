"""How `engine.backend` is resolved (without spawning a worker)."""

from __future__ import annotations

import re

import pytest

from engine.backend import DIFFSYNTH_FACTORY, factory_path, resolve_factory
from engine.errors import EngineStartError


def test_diffsynth_names_the_real_backend_lazily() -> None:
    assert factory_path("diffsynth") == tuple(DIFFSYNTH_FACTORY.split(":"))


@pytest.mark.parametrize("bad", ["", "nocolon", "module:", ":factory", "module:not an identifier"])
def test_malformed_settings_are_refused_with_the_expected_form(bad: str) -> None:
    with pytest.raises(EngineStartError, match=re.escape('"package.module:factory"')):
        factory_path(bad)


def test_a_missing_module_or_factory_is_named() -> None:
    with pytest.raises(EngineStartError, match="could not be imported"):
        resolve_factory("no_such_module_here:create")
    with pytest.raises(EngineStartError, match="has no callable 'nothing'"):
        resolve_factory("engine.messages:nothing")


def test_an_import_path_resolves_to_its_factory() -> None:
    from tests.support import tiny_backend

    assert resolve_factory("tests.support.tiny_backend:create_backend") is tiny_backend.create_backend


@pytest.mark.parametrize(
    ("installed", "expected"), [("2.1.11", "diffsynth 2.1.11 is installed"), (None, "not installed")]
)
def test_the_diffsynth_version_is_checked_at_load(
    monkeypatch: pytest.MonkeyPatch, installed: str | None, expected: str
) -> None:
    import importlib.metadata

    from engine import diffsynth_import
    from engine.errors import EngineStartError

    def version(name: str) -> str:
        assert name == "diffsynth"
        if installed is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return installed

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(EngineStartError, match=expected) as failed:
        diffsynth_import.check_diffsynth_version()
    assert "pip install" in str(failed.value)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: diffsynth_import.SUPPORTED_DIFFSYNTH)
    diffsynth_import.check_diffsynth_version()


def test_torch_compile_is_deferred_to_the_first_call_while_diffsynth_imports() -> None:
    """DiffSynth compiles flex attention at import; the deferred compile must not compile (and so
    import torch's compiler) until the function is called, in either of torch.compile's forms."""
    from engine.diffsynth_import import deferred_compile

    compiled: list[tuple[object, dict[str, object]]] = []

    def real(fn: object, **options: object) -> object:
        compiled.append((fn, options))
        return lambda *args, **kwargs: ("compiled", fn(*args, **kwargs))  # type: ignore[operator]

    compile = deferred_compile(real)

    def double(x: int) -> int:
        return 2 * x

    wrapped = compile(double, dynamic=False)
    decorated = compile(mode="max-autotune")(double)
    assert compiled == []
    assert wrapped.__name__ == "double"
    assert wrapped(3) == ("compiled", 6)
    assert wrapped(4) == ("compiled", 8)
    assert decorated(5) == ("compiled", 10)
    assert compiled == [(double, {"dynamic": False}), (double, {"mode": "max-autotune"})]
