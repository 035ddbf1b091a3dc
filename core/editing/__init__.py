"""Inversion and 3D-aware semantic editing (DatasetNeRF §5.4); see docs/editing.md.

    from core.editing.inputs import read_image, read_label_map      # checked, cropped, resized inputs
    from core.editing.inversion import InversionSettings, invert_image, invert_labels
    from core.editing.semantic_edit import EditSettings, edit_identity, render_view
    from core.editing.perceptual import perceptual_loss              # .name: which loss is active
    from core.editing.store import save_edit, save_inversion, read_latent

Every long call takes `progress` (a callback receiving core.editing.progress.StepReport) and
`should_stop` (checked between steps). No Qt here; app/edit.py wraps these functions.
"""
