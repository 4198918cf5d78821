"""edgedl: take a deep-learning model to edge devices.

Importing this package stays cheap: the heavy frameworks load only inside the functions that
use them. The Python API lives in :mod:`edgedl.api`; the device runtime in :mod:`edgedl.runtime`.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "compress", "train", "bench", "inspect"]


def __getattr__(name: str):
    # Lazy access to the public API so `import edgedl` never pulls in pydantic or torch.
    if name in ("compress", "train", "bench", "inspect"):
        from edgedl import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgedl' has no attribute {name!r}")
