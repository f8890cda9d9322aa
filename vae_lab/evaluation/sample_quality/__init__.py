"""Sample quality: how blurry are a VAE's samples, and how much of it is the prior's fault."""

from vae_lab.evaluation.sample_quality.classifier import (
    ClassifierSpec,
    FeatureClassifier,
    cached_classifier,
)
from vae_lab.evaluation.sample_quality.metrics import PrecisionRecall, SampleQualityMetrics
from vae_lab.evaluation.sample_quality.quality import RENDERINGS, SampleQuality

__all__ = [
    "RENDERINGS",
    "ClassifierSpec",
    "FeatureClassifier",
    "PrecisionRecall",
    "SampleQuality",
    "SampleQualityMetrics",
    "cached_classifier",
]
