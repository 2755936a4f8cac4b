"""Pure-numpy analysis of extracted activations for Activation Explorer.

Everything here takes and returns numpy arrays (plus small frozen dataclasses) and imports no
model, storage or UI library, so it runs in the read-only app, in extraction jobs and in tests
alike. Modules:

* ``directions``: label means, difference-of-means directions (one-shot, streamed, or from
  label means already computed: ``directions_from_means``), norms,
  cosines, split-half / bootstrap stability and held-out projection separability (AUC).
* ``decomposition``: SVD-based PCA and first-principal-direction control vectors.
* ``similarity``: linear CKA, RSA, Procrustes alignment and normalised layer depth.
* ``pairs``: minimal-pair differences, per-dimension consistency and per-token difference maps.

Caveat: inputs may be float16/float32; computations that need it run in float64, so results are
float64 regardless of the input dtype.
"""

from .decomposition import PCAResult, align_sign, first_principal_direction, pca
from .directions import (
    LabelStats,
    MeanAccumulator,
    auc,
    bootstrap_stability,
    cosine,
    cosine_matrix,
    diff_of_means,
    direction_norms,
    direction_norms_by_layer,
    directions_from_means,
    label_directions,
    label_means,
    project,
    projection_separability,
    projection_separability_layers,
    split_half_stability,
    split_half_stability_layers,
    typical_norm,
)
from .pairs import (
    DimensionStats,
    dimension_consistency,
    mean_abs_difference,
    pair_differences,
    per_category_mean_abs,
    rank_dimensions,
    relative_difference,
    token_difference_map,
)
from .similarity import (
    best_pairs,
    centred_label_similarity,
    cka_matrix,
    linear_cka,
    normalised_depth,
    procrustes_cosine,
    procrustes_cosine_matrix,
    procrustes_fit,
    rsa,
    rsa_matrix,
)

__all__ = [
    "DimensionStats",
    "LabelStats",
    "MeanAccumulator",
    "PCAResult",
    "align_sign",
    "auc",
    "best_pairs",
    "bootstrap_stability",
    "centred_label_similarity",
    "cka_matrix",
    "cosine",
    "cosine_matrix",
    "diff_of_means",
    "dimension_consistency",
    "direction_norms",
    "direction_norms_by_layer",
    "directions_from_means",
    "first_principal_direction",
    "label_directions",
    "label_means",
    "linear_cka",
    "mean_abs_difference",
    "normalised_depth",
    "pair_differences",
    "pca",
    "per_category_mean_abs",
    "procrustes_cosine",
    "procrustes_cosine_matrix",
    "procrustes_fit",
    "project",
    "projection_separability",
    "projection_separability_layers",
    "rank_dimensions",
    "relative_difference",
    "rsa",
    "rsa_matrix",
    "split_half_stability",
    "split_half_stability_layers",
    "token_difference_map",
    "typical_norm",
]
