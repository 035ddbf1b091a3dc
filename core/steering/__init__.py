"""PoseGen-style feedback-steered generation (docs/steering.md): no Qt."""
