"""covseg.metrics: the papers' metrics with the Inf-Net authors' toolbox conventions, and binary volume metrics.

The ignite wrappers live in :mod:`covseg.metrics.handlers` (not imported here, to keep this import light).
"""

from covseg.metrics.binary import binary_scores
from covseg.metrics.folders import evaluate_folders
from covseg.metrics.tables import format_table_row
from covseg.metrics.toolbox import score_map

__all__ = ["binary_scores", "evaluate_folders", "format_table_row", "score_map"]
