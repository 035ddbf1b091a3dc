"""The fit of the embedded default backbone to the procedural category (design.md section 2).

    fit(FitRequest(out, minutes=60), progress=callback, should_stop=flag)   # trainer.py
    evaluate_fit(generator, identities=50, views=8)                           # evaluate.py

Supervision is rgb, alpha and depth of procedural renders; part labels never reach the fit.
"""
from core.fitting.config import SHIPPED_RESOLUTION, FitSettings, default_config
from core.fitting.evaluate import EVALUATION_VIEWS, evaluate_fit
from core.fitting.trainer import (HEAD_RADIUS, FitError, FitProgress, FitRequest, FitResult, fit,
                                  save_checkpoint)

__all__ = ["SHIPPED_RESOLUTION", "FitSettings", "default_config", "EVALUATION_VIEWS", "evaluate_fit",
           "HEAD_RADIUS", "FitError", "FitProgress", "FitRequest", "FitResult", "fit", "save_checkpoint"]
