"""Register torchvision's operator schemas when the installed torchvision cannot.

The pinned torchvision wheel is a CUDA build; on a CPU torch its C++ ops never load and
`import torchvision` fails with "operator torchvision::nms does not exist" because its meta
registrations look the schemas up. Defining the schemas (no kernels: Concord never calls them)
lets the import succeed. This is the one place that does it; `core.models` calls it on import,
and everything that imports torchvision or open_clip imports `core.models` first.
"""
from __future__ import annotations

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library: torch.library.Library | None = None


def _has_schema(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


def register_torchvision_ops() -> None:
    """Define the missing `torchvision::` schemas once; a no-op where torchvision's own ops loaded."""
    global _library
    missing = [name for name in _SCHEMAS if not _has_schema(name)]
    if not missing:
        return
    if _library is None:
        _library = torch.library.Library("torchvision", "FRAGMENT")
    for name in missing:
        _library.define(_SCHEMAS[name])
