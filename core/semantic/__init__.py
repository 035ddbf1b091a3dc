"""The semantic branch (DatasetNeRF): networks, rendering with the density prior, training, checkpoints."""
from core.semantic.branch import SemanticBranch, SemanticIdentity
from core.semantic.checkpoint import BackboneMismatchError, latest_checkpoint, load_branch, save_branch
from core.semantic.rendering import LabelledView, labels_for_view, render_semantic, view_prior
from core.semantic.training import AnnotatedView, TrainingProgress, TrainingResult, TrainingSettings, train_semantic

__all__ = [
    "SemanticBranch", "SemanticIdentity", "LabelledView", "labels_for_view", "render_semantic", "view_prior",
    "AnnotatedView", "TrainingSettings", "TrainingProgress", "TrainingResult", "train_semantic",
    "save_branch", "load_branch", "latest_checkpoint", "BackboneMismatchError",
]
