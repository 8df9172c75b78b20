"""rwf-render: neural fields with Fourier-feature inputs and randomly factorized (RWF) linear layers.

Importing the package is cheap: it never compiles native code and never touches CUDA. The names below load their
module (and torch) on first use, so the ``rwf`` command starts without importing torch before it can hold Ctrl+C.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "FactorizedLinear": "layers", "WeightNormLinear": "layers", "PlainLinear": "layers", "make_linear": "layers",
    "param_groups": "layers", "rwf_scale_parameters": "layers", "PARAMS": "layers",
    "GaussianFourierFeatures": "encodings", "PositionalEncoding": "encodings", "SphericalHarmonics": "encodings",
    "Identity": "encodings", "HashGrid": "encodings", "make_encoding": "encodings",
    "MLP": "fields", "NeuralField": "fields", "MLPConfig": "fields", "EncodingConfig": "fields",
    "UserError": "errors",
    "load_run": "api", "ImageRun": "api", "ShapeRun": "api", "NeRFRun": "api",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
