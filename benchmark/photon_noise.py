"""Poisson noise as the zero-shot denoising papers make it: ``y = Poisson(lambda x) / lambda``,
left unclipped.

dipbench has two parameterisations of shot noise, named apart:

``poisson`` (:mod:`benchmark.degradations`)
    ImageNet-C's "shot" noise, the noise-types suite's (ES-WMV's benchmark): level ``c``, the
    photon scale of its severities (60, 25, 12, 5, 3), ``poisson(x c) / c`` clipped to [0, 1].
``poisson_counts`` (here)
    level ``lambda``, the expected photon count of a white pixel: ``Poisson(lambda x) /
    lambda``, not clipped, as ZS-N2N's notebook makes it (``torch.poisson(noise_level * x) /
    noise_level``, beside its Gaussian, which it clips) and as the papers that compare with
    it report lambda = 50 and 10. Both have mean ``x`` and variance ``x / lambda``; unclipped,
    a white pixel at lambda = 10 reads up to about 2.

This model lives in a module of its own, registered through
:func:`~benchmark.degradations.register_degradation`: only the cells that use it carry this
file in their code fingerprint, so adding it recomputed no other cell.
"""

from __future__ import annotations

import numpy as np

from benchmark.arrays import check_image
from benchmark.degradations import Degraded, Observation, register_degradation
from benchmark.forward import Identity


@register_degradation("poisson_counts")
def poisson_counts(image: np.ndarray, lam: float, rng: np.random.Generator) -> Degraded:
    """Photon counts of expected value ``lam * x``, divided by ``lam``; unclipped.

    Examples
    --------
    >>> import numpy as np
    >>> white = np.ones((64, 64, 1), np.float32)
    >>> y = poisson_counts(white, 10, np.random.default_rng(0)).observation.y
    >>> bool(y.max() > 1), round(float(y.mean()), 1)
    (True, 1.0)
    """
    image = check_image(image)
    if not lam > 0:
        raise ValueError(f"poisson_counts needs a photon count lambda > 0, got {lam}")
    y = rng.poisson(image * lam) / lam
    params = {"kind": "poisson_counts", "level": lam, "lambda": lam, "clip": False}
    return Degraded(Observation(y.astype(np.float32), Identity(), params), image)
