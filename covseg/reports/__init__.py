"""covseg.reports: per-volume reports (``report.json``, ``slices.csv``), batch summaries and the console table."""

from covseg.reports.batch import VolumeResult, format_console_table, write_batch_report
from covseg.reports.volume import VolumeReport, build_volume_report, slice_rows, slices_csv_text

__all__ = [
    "VolumeReport",
    "VolumeResult",
    "build_volume_report",
    "format_console_table",
    "slice_rows",
    "slices_csv_text",
    "write_batch_report",
]
