"""Concord's engine: store, import, models, methods, jobs, evaluation, export and CLI.

Importing `core` registers the torchvision operator schemas first (see `torchvision_ops`), so that any
later `import torchvision` (open_clip does one) works with the CUDA-built torchvision wheel on a CPU torch.
"""
from core.torchvision_ops import register_torchvision_ops

register_torchvision_ops()

__version__ = "0.1.0"
