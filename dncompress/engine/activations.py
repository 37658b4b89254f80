"""Darknet activations, applied in place where the array is ours to change."""
from __future__ import annotations

from collections.abc import Iterator

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


def relu6(x: np.ndarray) -> np.ndarray:
    """min(max(x, 0), 6), in place."""
    return np.clip(x, 0, 6, out=x)


def ramp(x: np.ndarray) -> np.ndarray:
    """Darknet's ramp: x * (x > 0) + 0.1 x, in place."""
    return np.add(np.maximum(x, 0), x * np.float32(0.1), out=x)


def hard_mish(x: np.ndarray) -> np.ndarray:
    """Darknet's hard_mish: x for x > 0, x^2/2 + x on (-2, 0], 0 below: x * clip(x + 2, 0, 2) / 2."""
    return np.multiply(x, np.clip(x + 2, 0, 2) * np.float32(0.5), out=x)


def tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(x, out=x)


ACTIVATIONS = {"linear": linear, "leaky": leaky, "relu": relu, "logistic": logistic,
               "mish": mish, "swish": swish, "relu6": relu6, "ramp": ramp, "hard_mish": hard_mish,
               "tanh": tanh}


# elements per block of `in_blocks`: its temporaries stay in cache and out of the peak memory
BLOCK_ELEMENTS = 1 << 16


def in_blocks(activation, y: np.ndarray) -> np.ndarray:
    """activation(y) in place, over blocks of channels (axis 1) of about BLOCK_ELEMENTS: the temporaries
    of leaky/mish/swish stay small, where a whole-output temporary would add to the conv's scratch."""
    per_channel = max(1, y.size // max(y.shape[1], 1))
    step = max(1, BLOCK_ELEMENTS // per_channel)
    for start in range(0, y.shape[1], step):
        activation(y[:, start:start + step])
    return y


# elements of one block of `cache_blocks` (128 KB in float32): a block and the two or three arrays read
# beside it stay in L2 through every step done on it
CACHE_BLOCK = 1 << 15


def cache_blocks(images: int, channels: slice, rows: int, row_size: int = 1
                 ) -> Iterator[tuple[int, slice, slice]]:
    """(image, channel slice, row slice) blocks of about CACHE_BLOCK elements covering `images`, `channels`
    and `rows` rows of `row_size` elements per channel: several whole channels of one image, or a range of
    one channel's rows. Per-element work done block by block stays in cache, where whole-array steps
    went to memory and back once each."""
    per_channel = rows * row_size
    if per_channel <= CACHE_BLOCK:
        step = max(1, CACHE_BLOCK // max(per_channel, 1))
        for i in range(images):
            for c in range(channels.start, channels.stop, step):
                yield i, slice(c, min(c + step, channels.stop)), slice(0, rows)
        return
    parts = -(-per_channel // CACHE_BLOCK)
    size = -(-rows // parts)
    for i in range(images):
        for c in range(channels.start, channels.stop):
            for r in range(0, rows, size):
                yield i, slice(c, c + 1), slice(r, min(r + size, rows))
