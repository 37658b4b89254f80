"""The activation-memory bound on networks (`--max-activation-mb`, $DNCOMPRESS_MAX_ACTIVATION_MB), apart
from network.py so that the command layer's help can name it without loading numpy."""
from __future__ import annotations

import math
import os

from .errors import DncompressError

MAX_ACTIVATION_ENV = "DNCOMPRESS_MAX_ACTIVATION_MB"
DEFAULT_MAX_ACTIVATION_MB = 4096.0


def max_activation_mb() -> float:
    """The activation-memory bound: $DNCOMPRESS_MAX_ACTIVATION_MB, else 4096 MB."""
    raw = os.environ.get(MAX_ACTIVATION_ENV)
    if raw is None:
        return DEFAULT_MAX_ACTIVATION_MB
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise DncompressError(f"{MAX_ACTIVATION_ENV}={raw} must be a positive number of megabytes")
    return value
