"""Tiny projects for tests that need one on disk: a generator file, a label set, maybe a branch."""
from pathlib import Path

from core.checkpoint.studio_format import save_generator
from core.project import BackboneRef, Project, default_label_set
from core.semantic import save_branch
from core.semantic.checkpoint import checkpoint_name


def project_on(folder: Path, generator, label_set=None, branch=None, step: int = 0) -> Path:
    """A project folder on `generator` (saved as tiny.safetensors), with `branch` saved at `step`."""
    folder.mkdir(parents=True, exist_ok=True)
    save_generator(generator, folder / "tiny.safetensors")
    reference = BackboneRef.for_file(folder / "tiny.safetensors", folder)
    Project.create(folder, reference, label_set or default_label_set()).close()
    if branch is not None:
        save_branch(branch, folder / "semantic" / checkpoint_name(step), reference.content_hash, step=step)
    return folder
