"""imgfmt: inspect, convert and publish virtual-machine disk images safely.

``imgfmt.inspect(path_or_stream, policy=Policy(...))`` returns an ``ImageReport``; see README.md.
"""

from __future__ import annotations

from .detect import inspect
from .errors import FormatError, ImgfmtError, SourceError, UsageError
from .policy import Policy
from .report import Code, Finding, ImageReport, Severity

__all__ = [
    "Code",
    "Finding",
    "FormatError",
    "ImageReport",
    "ImgfmtError",
    "Policy",
    "Severity",
    "SourceError",
    "UsageError",
    "inspect",
]
__version__ = "0.1.0"
