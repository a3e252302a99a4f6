"""The model files majicflus needs and where they live under the model directory.

Layout: ``<model_dir>/<repo id>/<file>``, which is what ``snapshot_download(repo_id, local_dir=...)``
writes when each repository gets its own folder.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

MAJICFLUS_REPO = "MAILAND/majicflus_v1"
FLUX_REPO = "black-forest-labs/FLUX.1-dev"


class FileKind(enum.StrEnum):
    """What a registry entry is: safetensors weights (hash-checked) or a tokenizer folder."""

    WEIGHTS = "weights"
    TOKENIZER = "tokenizer"


@dataclass(frozen=True, slots=True)
class ModelFile:
    """One entry of the model set: a weights file (maybe sharded) or a tokenizer folder."""

    role: str
    repo_id: str
    paths: tuple[str, ...]  # relative to the repository folder; several for a sharded checkpoint
    allow_pattern: str  # what snapshot_download fetches for this entry
    kind: FileKind
    # DiffSynth's name-and-shape MD5 over all shards together (None for tokenizer folders).
    diffsynth_hash: str | None = None

    def local_paths(self, model_dir: Path) -> tuple[Path, ...]:
        """Where this entry's files are under ``model_dir``."""
        return tuple(model_dir / self.repo_id / p for p in self.paths)

    @property
    def display_name(self) -> str:
        return f"{self.repo_id}/{self.allow_pattern}"


MODEL_FILES: tuple[ModelFile, ...] = (
    ModelFile(
        role="dit",
        repo_id=MAJICFLUS_REPO,
        paths=("majicflus_v134.safetensors",),
        allow_pattern="majicflus_v134.safetensors",
        kind=FileKind.WEIGHTS,
        diffsynth_hash="3394f306c4cbf04334b712bf5aaed95f",
    ),
    ModelFile(
        role="text_encoder_clip",
        repo_id=FLUX_REPO,
        paths=("text_encoder/model.safetensors",),
        allow_pattern="text_encoder/model.safetensors",
        kind=FileKind.WEIGHTS,
        diffsynth_hash="94eefa3dac9cec93cb1ebaf1747d7b78",
    ),
    ModelFile(
        role="text_encoder_t5",
        repo_id=FLUX_REPO,
        paths=(
            "text_encoder_2/model-00001-of-00002.safetensors",
            "text_encoder_2/model-00002-of-00002.safetensors",
        ),
        allow_pattern="text_encoder_2/*",
        kind=FileKind.WEIGHTS,
        diffsynth_hash="22540b49eaedbc2f2784b2091a234c7c",
    ),
    ModelFile(
        role="vae",
        repo_id=FLUX_REPO,
        paths=("ae.safetensors",),
        allow_pattern="ae.safetensors",
        kind=FileKind.WEIGHTS,
        diffsynth_hash="21ea55f476dfc4fd135587abb59dfe5d",
    ),
    ModelFile(
        role="tokenizer_clip",
        repo_id=FLUX_REPO,
        paths=("tokenizer",),
        allow_pattern="tokenizer/*",
        kind=FileKind.TOKENIZER,
    ),
    ModelFile(
        role="tokenizer_t5",
        repo_id=FLUX_REPO,
        paths=("tokenizer_2",),
        allow_pattern="tokenizer_2/*",
        kind=FileKind.TOKENIZER,
    ),
)


def model_file(role: str) -> ModelFile:
    """The registry entry for ``role`` (e.g. "dit")."""
    for entry in MODEL_FILES:
        if entry.role == role:
            return entry
    raise KeyError(f"No model file with role {role!r}; known roles: {[e.role for e in MODEL_FILES]}")


@dataclass(frozen=True, slots=True)
class ModelPaths:
    """Resolved local paths of the whole set, as the backend passes them to DiffSynth."""

    dit: Path
    text_encoder_clip: Path
    text_encoder_t5: tuple[Path, ...]
    vae: Path
    tokenizer_clip: Path
    tokenizer_t5: Path

    @property
    def file_names(self) -> str:
        """Short names for image metadata: the DiT file and the repositories of the rest."""
        return f"{self.dit.name} + {FLUX_REPO} (CLIP-L, T5-XXL, VAE)"


def model_paths(model_dir: Path) -> ModelPaths:
    """Where each file of the set is expected under ``model_dir`` (existence is not checked)."""
    return ModelPaths(
        dit=model_file("dit").local_paths(model_dir)[0],
        text_encoder_clip=model_file("text_encoder_clip").local_paths(model_dir)[0],
        text_encoder_t5=model_file("text_encoder_t5").local_paths(model_dir),
        vae=model_file("vae").local_paths(model_dir)[0],
        tokenizer_clip=model_file("tokenizer_clip").local_paths(model_dir)[0],
        tokenizer_t5=model_file("tokenizer_t5").local_paths(model_dir)[0],
    )


APPROX_DOWNLOAD_BYTES = 33 * 10**9
"""Disk space the published files of the set take (the DiT checkpoint is most of it)."""
