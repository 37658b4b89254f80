"""Dynamic activation masks (integral pruning, Yang et al. 2018), in place on (N, C, H, W) float32."""
from __future__ import annotations

import math

import numpy as np


def threshold_mask(a: np.ndarray, threshold: float) -> np.ndarray:
    """Zero every |a| < threshold."""
    a[np.abs(a) < np.float32(threshold)] = 0
    return a


def winner_mask(a: np.ndarray, rate: float) -> np.ndarray:
    """Keep, per image, the ceil(rate * C*H*W) largest |a| (ties with the smallest winner kept too); zero
    the rest."""
    magnitude = np.abs(a.reshape(len(a), -1))
    size = magnitude.shape[1]
    winners = min(size, max(1, math.ceil(rate * size)))
    if winners == size:
        return a
    smallest_winner = np.partition(magnitude, size - winners, axis=1)[:, size - winners]
    a[(magnitude < smallest_winner[:, None]).reshape(a.shape)] = 0
    return a
