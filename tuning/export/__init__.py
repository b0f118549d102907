"""Export, in steps: plan it (`plan`: which trial of which study, on which data, under which
protocol; `selection` picks the trial, or a rule picks a point on the front), retrain the trial
on every training image by its own recipe (`retrain`), test it once and report (`report`), and
publish the model with its card (`pipeline`, through `tuning.publish.Publication`), beside the
seed-network baseline. What it will train and how long that takes is known before it starts
(`estimate`)."""

from tuning.export.estimate import ExportEstimate, estimate_export
from tuning.export.pipeline import ExportResult, export_study
from tuning.export.plan import ExportPlan, plan_export
from tuning.export.selection import load_exportable_study, pick_trial

__all__ = [
    "ExportEstimate",
    "ExportPlan",
    "ExportResult",
    "estimate_export",
    "export_study",
    "load_exportable_study",
    "pick_trial",
    "plan_export",
]
