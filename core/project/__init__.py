"""The project store (design.md section 4): label sets, annotations, the writer lock.

    with Project.create(folder, BackboneRef.for_file("default"), default_label_set()) as project:
        annotation_id = project.add_annotation({"seed": 1000000, "truncation_psi": 1.0}, camera, mask)
        project.update_annotation(annotation_id, mask)        # per-stroke autosave

    project = Project.open(folder)                            # read-only, no lock
    problems = []
    for annotation in project.iter_training_annotations(problems):
        annotation.mask, annotation.meta.identity, annotation.meta.camera_label
    for problem in problems:
        print(problem)                                        # names the file and the reason

No Qt here: the GUI and the command line both use this API.
"""
from .errors import (AnnotationError, AnnotationNotFoundError, BackboneMismatchError,
                     CorruptAnnotationError, ForeignAnnotationError, LabelInUseError,
                     LabelSetError, MaskSizeError, ProjectError, ProjectExistsError,
                     ProjectFormatError, ProjectLockedError, ProjectNotFoundError,
                     ProjectReadOnlyError, UnknownLabelError, UnsupportedVersionError)
from .labels import UNLABELLED_ID, Label, LabelSet, default_label_set
from .lock import StaleLockWarning
from .records import Annotation, AnnotationMeta, BackboneRef, IdentityRef
from .store import (PROJECT_FORMAT_VERSION, AnnotationCounts, AnnotationProblemWarning,
                    Project)

__all__ = [
    "AnnotationError", "AnnotationNotFoundError", "BackboneMismatchError", "CorruptAnnotationError",
    "ForeignAnnotationError", "LabelInUseError", "LabelSetError", "MaskSizeError", "ProjectError",
    "ProjectExistsError", "ProjectFormatError", "ProjectLockedError", "ProjectNotFoundError",
    "ProjectReadOnlyError", "UnknownLabelError", "UnsupportedVersionError",
    "UNLABELLED_ID", "Label", "LabelSet", "default_label_set", "StaleLockWarning",
    "Annotation", "AnnotationMeta", "BackboneRef", "IdentityRef",
    "PROJECT_FORMAT_VERSION", "AnnotationCounts", "AnnotationProblemWarning", "Project",
]
