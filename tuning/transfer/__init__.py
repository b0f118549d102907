"""Transfer: freeze an exported network, give it a new N-way head (`model`), tune the head's
recipe (`space`, a HyperModel) by nested cross-validation (`search`) in a study of its own
(`study`), and train, report and publish it (`run`, `card`, `report`).

It depends on the model card and the image code, never on the export pipeline."""

from tuning.transfer.model import BaseModel, load_base
from tuning.transfer.run import TransferResult, run_transfer
from tuning.transfer.search import Search
from tuning.transfer.space import SPACE, TransferHyperModel

__all__ = [
    "SPACE",
    "BaseModel",
    "Search",
    "TransferHyperModel",
    "TransferResult",
    "load_base",
    "run_transfer",
]
