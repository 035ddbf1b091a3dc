"""Mask editing for the Annotate and Edit workspaces, without Qt.

    editor = MaskEditor(np.zeros((128, 128), np.uint8))
    editor.begin_stroke(label=3, radius=4)
    editor.stroke_to(10.0, 12.0); editor.stroke_to(30.0, 12.0)
    editor.end_stroke()          # one undo step, returns the change (or None if nothing changed)
    editor.fill(64, 64, label=1) # contiguous flood fill, one undo step
    editor.undo(); editor.redo()

AnnotationAutosaver writes every committed mask through the project store on a background thread.
"""
from .autosave import AnnotationAutosaver, ViewKey
from .mask_editor import MaskChange, MaskEditor

__all__ = ["AnnotationAutosaver", "MaskChange", "MaskEditor", "ViewKey"]
