"""Classification of chromosome crops into cohesion classes A/B/C with model ensembles.

This package's top level imports no torch (the CLI starts fast): `ModelLibrary.load_ensemble`
imports the inference code when a model is actually loaded.
"""

from chromowatch.classify.crops import read_crop
from chromowatch.classify.library import (
    BundleInfo,
    EnsembleInfo,
    ModelLibrary,
    describe_library,
)
from chromowatch.classify.published import fetch_ikemoto2023

__all__ = [
    "BundleInfo",
    "EnsembleInfo",
    "ModelLibrary",
    "describe_library",
    "fetch_ikemoto2023",
    "read_crop",
]
