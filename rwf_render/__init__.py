"""rwf-render: neural fields with Fourier-feature inputs and randomly factorized (RWF) linear layers.

Importing the package is cheap: it never compiles native code and never touches CUDA.
"""

from .encodings import GaussianFourierFeatures, Identity, PositionalEncoding, SphericalHarmonics, make_encoding
from .errors import UserError
from .fields import MLP, EncodingConfig, MLPConfig, NeuralField
from .layers import (PARAMS, FactorizedLinear, PlainLinear, WeightNormLinear, make_linear, param_groups,
                     rwf_scale_parameters)

__version__ = "0.1.0"

__all__ = [
    "FactorizedLinear", "WeightNormLinear", "PlainLinear", "make_linear", "param_groups", "rwf_scale_parameters",
    "PARAMS", "GaussianFourierFeatures", "PositionalEncoding", "SphericalHarmonics", "Identity", "make_encoding",
    "MLP", "NeuralField", "MLPConfig", "EncodingConfig", "UserError", "__version__",
]
