"""The status of an artifact in convert's manifest and bench's report: one enum, its symbols, words and legend."""
from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    """Stored as its value ("passed" …) in manifest.json and report.json; compares equal to that string."""
    PASSED = "passed"
    OUTSIDE = "outside_tolerance"
    FAILED = "failed"

    @property
    def symbol(self) -> str:
        return SYMBOLS[self.value]

    @property
    def text(self) -> str:
        return TEXT[self.value]


SYMBOLS = {"passed": "✅", "outside_tolerance": "❎", "failed": "❌"}
TEXT = {"passed": "passed", "outside_tolerance": "outside tolerance", "failed": "failed"}
COLOURS = {"passed": "#2CA02C", "outside_tolerance": "#E6A000", "failed": "#D62728"}   # plots
LEGEND = "✅ exported and validated · ❎ exported, outside tolerance · ❌ failed to export"
