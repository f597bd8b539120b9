"""One fitting loop for every untrained-network prior (DIP, Deep Decoder).

The package: :mod:`~benchmark.methods.fit.config` (``FitConfig``), ``devices`` (device,
tensors, step cost, kernels), ``trackers`` (EMA, ES-WMV, oracle, curves, checkpoints) and
``loop`` (the loop itself, :func:`fit` and :func:`fit_many`).

A network maps a fixed random input ``z`` to an image; Adam fits its weights so that the
image, passed through the task's forward operator, matches the observation:

- denoising: ``||f(z) - y||^2``
- inpainting: ``||m * f(z) - m * y||^2`` (known pixels only)
- super-resolution: ``||D f(z) - y||^2`` with D DIP's Lanczos-2 downsampler.

The operator comes from each observation's forward model (``Observation.physics``, see
:mod:`benchmark.forward`): the object that made the observation is the one in the loss.

From a single run it returns several outputs:

``last``       the output of the final weights, as the authors' code reads it out: one
               forward pass of the last step's input (with input noise, the last perturbed
               ``z``) after the last step (and after a restore of the last good weights, if
               the final check made one), never a diverged or rejected iterate;
``ema``        the exponential moving average ``avg = d * avg + (1 - d) * out`` (d = 0.99);
``es``         ES-WMV (no ground truth): the output at the iteration whose window of the last
               W outputs has the smallest variance, frozen once the variance has not improved
               for P iterations. ``info["es_stop_iteration"]`` is None if patience never ran
               out: ES-WMV has then detected nothing and ``es`` is only the minimum so far;
``best_loss``  the Deep Decoder's rule: a step is a new best when its loss is below
               1/1.005 of the best so far, and the output kept is that of the weights after
               that step (the next step's output, or the final weights' output);
``oracle``     the best PSNR against the clean image over every output the fit tracks (each
               step's output, the EMA at each step, and the final weights' output), only when
               a monitoring reference is given; ``info["oracle_output"]`` says which. It uses
               the ground truth and is labelled as an oracle.

Speed. The hot loop never waits for the device: trackers, curves and snapshots live in
device tensors updated in place, and the host reads them every ``check_every`` steps
(backtracking and NaN checks) and at the end. :func:`fit_many` trains several cells of the
same network and image size in one pass (see :func:`~benchmark.methods.stacking.stack_networks`):
each cell keeps its own weights, Adam state, BatchNorm statistics, input, noise stream and
outputs, so its result equals the one-at-a-time result: bit for bit on the CPU, up to float
rounding on CUDA.
"""

from benchmark.device import resolve_device
from benchmark.methods.fit.config import (
    BEST_LOSS_MARGIN,
    CURVE_COLUMNS,
    MEMORY_FORMATS,
    NATIVE_CONV_GFLOP,
    FitConfig,
    FitError,
)
from benchmark.methods.fit.devices import (
    cpu_convolution_backend,
    device_settings,
    step_gflop,
    step_gflop_at,
    to_numpy,
    to_tensor,
)
from benchmark.methods.fit.loop import FitState, Trained, fit, fit_many, make_input, train
from benchmark.methods.fit.timing import time_steps

__all__ = [
    "BEST_LOSS_MARGIN",
    "CURVE_COLUMNS",
    "MEMORY_FORMATS",
    "NATIVE_CONV_GFLOP",
    "FitConfig",
    "FitError",
    "FitState",
    "cpu_convolution_backend",
    "device_settings",
    "fit",
    "fit_many",
    "make_input",
    "resolve_device",
    "step_gflop",
    "step_gflop_at",
    "time_steps",
    "to_numpy",
    "to_tensor",
    "Trained",
    "train",
]
