"""[summax_convolutional]: the Sum-and-Max (SAM) neuron, o = max_i(x_i + W+_i) + min_i(x_i + W-_i) over
each receptive field, then optional batchnorm, bias and activation like [convolutional].

Keys as [convolutional]: filters, size, stride, pad/padding (< size), groups, batch_normalize,
activation. .weights: biases, [scales, rolling_mean, rolling_variance], weights_max (W+), weights_min
(W-), each (filters, C/groups, size, size). Padded cells never win (-inf for the max, +inf for the min),
which is why every window must hold an input cell (padding < size)."""
from __future__ import annotations


from ..engine.activations import ACTIVATIONS
from ..engine.summax import CHUNK_ELEMENTS, summax2d
from .base import register
from .conv import ACTIVATION_TEMPORARIES, ConvKeys


@register("summax_convolutional")
class SummaxConvolutional(ConvKeys):
    param_names = ("biases", "scales", "rolling_mean", "rolling_variance", "weights_max", "weights_min")
    weight_names = ("weights_max", "weights_min")

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        if self.pad >= self.size:
            raise self.error(f"padding={self.pad} must be below size={self.size}: a window of padding "
                             "alone has no input to take the max of", "padding")

    def kernel_output(self, x):
        p = self.params
        return summax2d(x, p["weights_max"], p["weights_min"], self.stride, self.pad, self.groups)

    def workspace_elements(self) -> int:
        """The padded input, two column matrices (-inf and +inf padded), one chunk of sums and the min
        half of the output."""
        (c, h, w), (o, ho, wo), k, p = self.in_shapes[0], self.out_shape, self.size, self.pad
        taps, out = c // self.groups * k * k, o * ho * wo
        chunk = min(o * taps * ho * wo, max(CHUNK_ELEMENTS, self.groups * taps * ho * wo))
        kernel = c * (h + 2 * p) * (w + 2 * p) + 2 * c * k * k * ho * wo + chunk + out
        return max(kernel, ACTIVATION_TEMPORARIES.get(self.activation, 0) * out)

    def forward(self, xs):
        y = self.kernel_output(xs[0])
        scale, shift = (v.astype(y.dtype).reshape(1, -1, 1, 1) for v in self.output_affine())
        if self.batch_normalize:
            y *= scale
        y += shift
        return ACTIVATIONS[self.activation](y)
