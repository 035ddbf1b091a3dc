"""Annotation exchange with other tools: views out for CVAT / labelme, painted masks back in."""
from core.exchange.importer import ImportSummary, import_annotations
from core.exchange.views import ExchangeError, export_views, read_sidecar

__all__ = ["ExchangeError", "ImportSummary", "export_views", "import_annotations", "read_sidecar"]
