"""The majicflus model set: registry, download, check. Imports neither torch nor other packages."""

from models.check import (
    FIX_COMMAND,
    FileCheck,
    FileStatus,
    ModelCheckReport,
    ModelFilesMissing,
    check_models,
    require_complete,
)
from models.download import (
    DownloadFailed,
    DownloadProgress,
    DownloadUnavailable,
    FileTransfer,
    TransferFactory,
    download_models,
)
from models.registry import MODEL_FILES, ModelFile, ModelPaths, model_paths

__all__ = [
    "FIX_COMMAND",
    "MODEL_FILES",
    "DownloadFailed",
    "DownloadProgress",
    "DownloadUnavailable",
    "FileCheck",
    "FileStatus",
    "FileTransfer",
    "ModelCheckReport",
    "ModelFile",
    "ModelFilesMissing",
    "ModelPaths",
    "TransferFactory",
    "check_models",
    "download_models",
    "model_paths",
    "require_complete",
]
