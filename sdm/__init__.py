"""Spiking diffusion models: the shared foundation.

`sdm` runs models (neurons, spiking UNets, the sampler, metrics); `calibration` measures
activations; `convert` builds spiking networks from pretrained ANNs on top of both.
"""

from sdm.errors import SDMError

__version__ = "0.1.0"
__all__ = ["SDMError", "__version__"]
