"""Run reports beyond report.md: report.html (catpose.report.html)."""
