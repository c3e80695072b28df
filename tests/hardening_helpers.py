"""Shared by the hardening tests: a pickle that would run code if a loader let it."""
import os


class Hostile:
    """Unpickling this runs ``touch <marker>`` (when a loader lets it): put it in a checkpoint, check the marker."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))
