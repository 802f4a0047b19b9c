"""spurbench: generate spurious-image test sets and measure which spurious features fool a classifier."""

__version__ = "0.1.0"

from spurbench.errors import SpurbenchError

__all__ = ["SpurbenchError", "__version__"]
