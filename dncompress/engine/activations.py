"""Darknet activations, applied in place where the array is ours to change."""
from __future__ import annotations

import numpy as np


def linear(x: np.ndarray) -> np.ndarray:
    return x


def leaky(x: np.ndarray) -> np.ndarray:
    """max(x, 0.1 x), in place."""
    return np.maximum(x, x * np.float32(0.1), out=x)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0, out=x)


def logistic(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), in place; exp overflow to inf gives the right limit 0."""
    with np.errstate(over="ignore"):
        np.negative(x, out=x)
        np.exp(x, out=x)
        x += 1
        return np.reciprocal(x, out=x)


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)) without overflow."""
    return np.logaddexp(x, np.float32(0))


def mish(x: np.ndarray) -> np.ndarray:
    """x * tanh(softplus(x))."""
    return np.multiply(x, np.tanh(softplus(x)), out=x)


def swish(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x)."""
    return np.multiply(x, logistic(x.copy()), out=x)


ACTIVATIONS = {"linear": linear, "leaky": leaky, "relu": relu, "logistic": logistic,
               "mish": mish, "swish": swish}
