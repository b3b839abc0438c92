"""Errors of the image store. Each names the store or image and what to do."""

from __future__ import annotations

from ..errors import ImgfmtError
from ..signals import Interrupted

__all__ = [
    "ImageRefused",
    "InUse",
    "Interrupted",
    "InvalidTransition",
    "NotFound",
    "StoreError",
    "StoreFull",
]


class StoreError(ImgfmtError):
    """A backend could not do what was asked (I/O, permissions, unreachable service)."""


class StoreFull(StoreError):
    """No backend location had room for the image, or it ran out of space mid-write."""


class NotFound(StoreError):
    """No image (or no stored data) by that id or name."""


class InUse(StoreError):
    """The data cannot be removed because something depends on it (an RBD clone)."""


class InvalidTransition(StoreError):
    """A status change Glance's image state machine does not allow."""


class ImageRefused(StoreError):
    """The image failed inspection or the policy; nothing was written."""

    def __init__(self, message: str, report: object) -> None:
        self.report = report
        super().__init__(message)
