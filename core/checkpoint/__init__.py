"""Generator checkpoints: official EG3D pickles (read safely) and the studio's .safetensors format."""
from core.checkpoint.errors import (
    CheckpointError,
    CheckpointVersionError,
    CorruptCheckpointError,
    ForbiddenGlobalError,
    ForeignCheckpointError,
    NotANetworkPickleError,
    StateDictMismatchError,
    TruncatedCheckpointError,
    UnsupportedGeneratorError,
)

__all__ = [
    "CheckpointError",
    "CheckpointVersionError",
    "CorruptCheckpointError",
    "ForbiddenGlobalError",
    "ForeignCheckpointError",
    "NotANetworkPickleError",
    "StateDictMismatchError",
    "TruncatedCheckpointError",
    "UnsupportedGeneratorError",
]
