"""Sample-quality metrics in a classifier's feature space, as torchmetrics (they aggregate
across DDP ranks: FID's states are sums, KID's and precision/recall's concatenated features).

* FID (Heusel et al. 2017), the Fréchet distance between Gaussians fitted to the features of
  real images (mean mu_r, covariance S_r) and of model images (mu_g, S_g),

      FID = |mu_r - mu_g|^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2)),

  torchmetrics' ``FrechetInceptionDistance`` with the classifier as its feature extractor.
  Its plug-in estimate is biased upwards at small N (Bińkowski et al. 2018; Chong & Forsyth
  2020): compare FIDs computed on the same number of images only.
* KID (Bińkowski et al. 2018), the squared MMD with the kernel k(a, b) = (a.b / F + 1)^3, by
  its unbiased estimator (mean over ``subsets`` random subsets): unbiased at any N, so it is
  the figure to read where the test set is small (the digits' 359 images).
* Precision and recall (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for
  Assessing Generative Models"): with B_k(f) the ball around feature f reaching its k-th nearest
  neighbour in its own set,

      precision = P_{g ~ model}[ g in union_r B_k(r) ]   (samples that look like real data)
      recall    = P_{r ~ data}[ r in union_g B_k(g) ]    (real data the model covers).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance
from torchmetrics.utilities import dim_zero_cat

ROWS = 1024  # distances computed ROWS x N at a time: memory stays bounded


def knn_radii(features: Tensor, k: int) -> Tensor:
    """Distance of each feature [N, F] to its k-th nearest neighbour among the others."""
    return torch.cat(
        [torch.cdist(rows, features).kthvalue(k + 1, dim=1).values for rows in features.split(ROWS)]
    )


def covered(points: Tensor, centres: Tensor, radii: Tensor) -> Tensor:
    """For each point [N, F]: whether it lies in some ball (centre [M, F], radius [M])."""
    return torch.cat(
        [(torch.cdist(rows, centres) <= radii).any(dim=1) for rows in points.split(ROWS)]
    )


class PrecisionRecall(Metric):
    """Improved precision and recall (Kynkäänniemi et al. 2019), k-NN balls of k = ``nearest_k``."""

    full_state_update = False

    def __init__(self, feature: nn.Module, nearest_k: int = 3) -> None:
        super().__init__()
        self.feature = feature
        self.nearest_k = nearest_k
        self.add_state("real_features", [], dist_reduce_fx="cat")
        self.add_state("fake_features", [], dist_reduce_fx="cat")

    def update(self, images: Tensor, real: bool) -> None:
        features = self.feature(images).double()
        (self.real_features if real else self.fake_features).append(features)

    def compute(self) -> dict[str, Tensor]:
        real, fake = dim_zero_cat(self.real_features), dim_zero_cat(self.fake_features)
        k = self.nearest_k
        if min(len(real), len(fake)) <= k:
            raise ValueError(f"precision/recall need more than nearest_k={k} images of each kind")
        precision = covered(fake, real, knn_radii(real, k)).double().mean()
        recall = covered(real, fake, knn_radii(fake, k)).double().mean()
        return {"precision": precision, "recall": recall, "num_images": torch.tensor(len(fake))}


class SampleQualityMetrics(nn.Module):
    """FID of reconstructions, and FID, KID, precision and recall of samples, against the same
    real images, all in the feature space of ``classifier``."""

    def __init__(
        self,
        classifier: nn.Module,
        nearest_k: int = 3,
        kid_subsets: int = 10,
        kid_subset_size: int = 1000,
    ) -> None:
        super().__init__()
        self.fid_recon = FrechetInceptionDistance(feature=classifier)
        self.fid_samples = FrechetInceptionDistance(feature=classifier)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Metric `Kernel Inception Distance`")
            self.kid_samples = KernelInceptionDistance(
                feature=classifier, subsets=kid_subsets, subset_size=kid_subset_size
            )
        self.kid_subset_size = kid_subset_size
        self.precision_recall = PrecisionRecall(classifier, nearest_k)

    def update(self, real: Tensor, recon: Tensor, samples: Tensor) -> None:
        """Flattened images [B, X] in [0, 1]: test images, their reconstructions, samples."""
        self.fid_recon.update(real, real=True)
        self.fid_recon.update(recon, real=False)
        for metric in (self.fid_samples, self.kid_samples, self.precision_recall):
            metric.update(real, real=True)
            metric.update(samples, real=False)

    def compute(self, seed: int = 0) -> dict[str, float]:
        """The figures; KID's random subsets are drawn with ``seed``."""
        pr = self.precision_recall.compute()
        n = int(pr["num_images"])
        self.kid_samples.subset_size = min(self.kid_subset_size, n)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            kid, _ = self.kid_samples.compute()
        return {
            "fid_recon": float(self.fid_recon.compute()),
            "fid_samples": float(self.fid_samples.compute()),
            "kid_samples": float(kid),
            "precision_samples": float(pr["precision"]),
            "recall_samples": float(pr["recall"]),
            "sample_quality_images": float(n),
        }

    def reset(self) -> None:
        for metric in (self.fid_recon, self.fid_samples, self.kid_samples, self.precision_recall):
            metric.reset()
