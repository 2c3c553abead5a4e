"""`seal report RUN_DIR`: Markdown and HTML reports of a run folder, with sections registered by the domains."""
from .core import ReportError, main, write_report

__all__ = ["ReportError", "main", "write_report"]
