"""`majicbot models check`: which model files are present, whether DiffSynth will recognise them,
and what to run when something is missing. Reads safetensors headers only: fast, no torch."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from models.registry import MODEL_FILES, FileKind, ModelFile
from models.safetensors_header import HeaderError, SafetensorsHeader, files_hash, read_header

FIX_COMMAND = "majicbot download"


class FileStatus(enum.StrEnum):
    OK = "ok"
    MISSING = "missing"
    INCOMPLETE = "incomplete"  # shorter than its header says: an interrupted download
    UNRECOGNISED = "unrecognised"  # names/shapes are not those DiffSynth expects
    UNREADABLE = "unreadable"


@dataclass(frozen=True, slots=True)
class FileCheck:
    entry: ModelFile
    paths: tuple[Path, ...]
    status: FileStatus
    size_bytes: int
    detail: str  # a sentence for the operator; empty when OK

    @property
    def ok(self) -> bool:
        return self.status is FileStatus.OK


@dataclass(frozen=True, slots=True)
class ModelCheckReport:
    model_dir: Path
    files: tuple[FileCheck, ...]

    @property
    def complete(self) -> bool:
        return all(f.ok for f in self.files)

    @property
    def problems(self) -> tuple[FileCheck, ...]:
        return tuple(f for f in self.files if not f.ok)

    def fix_message(self) -> str:
        """One paragraph saying what is wrong and the command that fixes it ('' when complete)."""
        if self.complete:
            return ""
        names = ", ".join(f"{f.entry.display_name} ({f.status})" for f in self.problems)
        return (
            f"Model files are missing or damaged in {self.model_dir}: {names}. "
            f"Run `{FIX_COMMAND}` to fetch them (it resumes partial downloads), "
            f"then `majicbot models check` to confirm."
        )

    def render(self) -> str:
        """A human-readable table for the CLI."""
        lines = [f"Model directory: {self.model_dir}"]
        for f in self.files:
            size = f"{f.size_bytes / 2**30:7.2f} GiB" if f.size_bytes else "        -  "
            mark = "OK " if f.ok else "!! "
            line = f"  {mark}{f.entry.role:<18} {f.status.value:<13} {size}  {f.entry.display_name}"
            if f.detail:
                line += f"\n       {f.detail}"
            lines.append(line)
        lines.append("All model files are present and recognised." if self.complete else self.fix_message())
        return "\n".join(lines)


class ModelFilesMissing(RuntimeError):
    """Raised before any GPU work when the model set is incomplete; the message says what to run."""

    def __init__(self, report: ModelCheckReport) -> None:
        super().__init__(report.fix_message())
        self.report = report


def _check_weights(entry: ModelFile, paths: tuple[Path, ...]) -> FileCheck:
    missing = [p for p in paths if not p.is_file()]
    size = sum(p.stat().st_size for p in paths if p.is_file())
    if missing:
        return FileCheck(
            entry, paths, FileStatus.MISSING, size, f"Not found: {', '.join(map(str, missing))}."
        )
    headers: list[SafetensorsHeader] = []
    for p in paths:
        try:
            header = read_header(p)
        except (HeaderError, OSError) as exc:
            return FileCheck(
                entry, paths, FileStatus.UNREADABLE, size, f"{exc} Delete it and download again."
            )
        actual = p.stat().st_size
        if actual < header.expected_file_size:
            return FileCheck(
                entry,
                paths,
                FileStatus.INCOMPLETE,
                size,
                f"{p.name} has {actual} of {header.expected_file_size} bytes (download interrupted).",
            )
        headers.append(header)
    got = files_hash(headers)
    if got != entry.diffsynth_hash:
        return FileCheck(
            entry,
            paths,
            FileStatus.UNRECOGNISED,
            size,
            f"Tensor names/shapes hash to {got}, DiffSynth expects {entry.diffsynth_hash}: "
            "this is a different model; replace it with the published file.",
        )
    return FileCheck(entry, paths, FileStatus.OK, size, "")


def _check_tokenizer(entry: ModelFile, paths: tuple[Path, ...]) -> FileCheck:
    folder = paths[0]
    files = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    size = sum(p.stat().st_size for p in files)
    if not files:
        return FileCheck(entry, paths, FileStatus.MISSING, 0, f"No tokenizer files in {folder}.")
    return FileCheck(entry, paths, FileStatus.OK, size, "")


def check_models(model_dir: Path) -> ModelCheckReport:
    """Check every file of the model set under ``model_dir`` (headers only; takes milliseconds)."""
    checks = []
    for entry in MODEL_FILES:
        paths = entry.local_paths(model_dir)
        if entry.kind is FileKind.WEIGHTS:
            checks.append(_check_weights(entry, paths))
        else:
            checks.append(_check_tokenizer(entry, paths))
    return ModelCheckReport(model_dir=model_dir, files=tuple(checks))


def require_complete(model_dir: Path) -> ModelCheckReport:
    """Return the report if the set is complete, else raise ModelFilesMissing with the fix."""
    report = check_models(model_dir)
    if not report.complete:
        raise ModelFilesMissing(report)
    return report
