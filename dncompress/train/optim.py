"""SGD as Darknet's update_convolutional_layer: momentum, weight decay on conv weights only, and the
[net] learning-rate schedule (burn_in with power 4, then policy=steps)."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..cfg import Section
from ..network import Network

# input_step: the input grid's step of a [quantize_convolutional] (QAT, LSQ), held as its act_min/act_max
INPUT_STEP = "input_step"
TRAINED = ("biases", "scales", "weights", "weights_max", "weights_min", INPUT_STEP)
# weight decay applies to kernel tensors only ([convolutional] weights, [summax_convolutional] W+ and W-)
DECAYED = ("weights", "weights_max", "weights_min")


@dataclasses.dataclass
class Schedule:
    """[net] keys learning_rate, momentum, decay, burn_in, power, policy=steps|constant with steps, scales."""

    learning_rate: float = 0.001
    momentum: float = 0.9
    decay: float = 0.0005
    burn_in: int = 0
    power: float = 4.0
    steps: tuple[int, ...] = ()
    scales: tuple[float, ...] = ()

    @classmethod
    def from_net(cls, net: Section) -> "Schedule":
        policy = net.get_str("policy", "steps")
        if policy not in ("steps", "constant"):
            raise net.error(f"policy={policy} is not supported; use steps or constant", "policy")
        steps = tuple(net.get_ints("steps", [])) if policy == "steps" else ()
        scales = tuple(net.get_floats("scales", [])) if policy == "steps" else ()
        if len(scales) < len(steps):
            raise net.error(f"{len(steps)} steps but {len(scales)} scales", "scales")
        return cls(net.get_float("learning_rate", 0.001), net.get_float("momentum", 0.9),
                   net.get_float("decay", 0.0005), net.get_int("burn_in", 0), net.get_float("power", 4.0),
                   steps, scales)

    def rate(self, batch_num: int) -> float:
        """Darknet get_current_rate for policy=steps: lr * (n/burn_in)^power during burn-in, else lr
        times every scale whose step has been reached."""
        if batch_num < self.burn_in:
            return self.learning_rate * (batch_num / self.burn_in) ** self.power
        rate = self.learning_rate
        for step, scale in zip(self.steps, self.scales):
            if batch_num >= step:
                rate *= scale
        return rate


class SGD:
    """Momentum buffers per (layer, tensor); `step` takes gradients summed over `batch` images."""

    def __init__(self, net: Network, schedule: Schedule):
        self.net = net
        self.schedule = schedule
        self.velocity: dict[tuple[int, str], np.ndarray] = {}

    def step(self, grads: dict[int, dict[str, np.ndarray]], batch_num: int, batch: int) -> float:
        """Darknet: v = m v - (g/batch + decay w [kernel tensors only]); w += lr v. Returns the rate used."""
        s = self.schedule
        rate = s.rate(batch_num)
        for index, layer_grads in grads.items():
            layer = self.net.layers[index]
            updated = {}
            for name in TRAINED:
                if name not in layer_grads:
                    continue
                param = np.array([layer.input_step]) if name == INPUT_STEP else layer.params[name]
                direction = layer_grads[name] / batch
                if name in DECAYED:
                    direction = direction + s.decay * param
                key = (index, name)
                v = s.momentum * self.velocity.get(key, 0) - direction
                self.velocity[key] = v
                updated[name] = (param + rate * v).astype(np.float32)
            if INPUT_STEP in updated:
                # an update that would take the step to zero or below collapses the grid: at most halve it
                step = float(updated.pop(INPUT_STEP)[0])
                layer.set_input_step(max(step, 0.5 * layer.input_step))
            layer.set_params(**updated)
        return rate
