"""Export: pick a study's trial (`selection`), retrain it on every training image by its own
recipe, test it once beside the seed network and publish the model with its card (`pipeline`)."""

from tuning.export.pipeline import ExportResult, export_study
from tuning.export.selection import ExportRecord, load_exportable_study

__all__ = ["ExportRecord", "ExportResult", "export_study", "load_exportable_study"]
