"""The semantic branch (DatasetNeRF): networks, rendering with the density prior, training, checkpoints."""
from core.semantic.branch import SemanticBranch, SemanticIdentity
from core.semantic.rendering import LabelledView, labels_for_view, render_semantic, view_prior

__all__ = ["SemanticBranch", "SemanticIdentity", "LabelledView", "labels_for_view", "render_semantic", "view_prior"]
