"""Concord's engine: store, import, models, methods, jobs, evaluation, export and CLI.

Importing `core` loads nothing heavy: torch, torchvision and open_clip are imported by the modules that use
them (the torchvision operator schemas are registered by `core.models`, before anything imports torchvision),
so commands that need no model start at once.
"""

__version__ = "0.1.0"
