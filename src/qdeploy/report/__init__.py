"""report.json (a typed RunResult) -> report.md + self-contained report.html with PNG plots."""
from .build import ReportConfig, report
from .tables import comparison_rows, markdown_table, paired_table, torch_table

__all__ = ["ReportConfig", "comparison_rows", "markdown_table", "paired_table", "report", "torch_table"]
