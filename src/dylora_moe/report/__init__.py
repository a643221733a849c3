"""Run reports: PNG figures and a Markdown/HTML summary drawn from a trainer's log history.

Importing this package is cheap; matplotlib is loaded only when figures are drawn.
"""

from dylora_moe.report.build import ReportResult, build_report, report_from_history, report_from_log_history

__all__ = ["ReportResult", "build_report", "report_from_history", "report_from_log_history"]
