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
* ``control``: control vectors (RepE) from paired states: ``pca_center``, ``pca_diff``,
  ``mean_diff`` as repeng defines them, sign aligned, with per-layer figures.
* ``readout``: the tokens a direction promotes and suppresses through the final norm and the
  unembedding (streamed over the vocabulary).

Caveat: inputs may be float16/float32; computations that need it run in float64, so results are
float64 regardless of the input dtype.
"""

from .control import (
    METHODS,
    ControlVectors,
    LayerVector,
    control_vectors,
    layer_vector,
    paired_differences,
    random_unit_vectors,
    sign_agreement,
)
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
    held_out_layers,
    label_directions,
    label_means,
    one_vs_rest_means,
    project,
    projection_separability,
    projection_separability_layers,
    split_half_stability,
    split_half_stability_layers,
    typical_norm,
)
from .pairs import (
    DimensionStats,
    PairLayer,
    PairSums,
    dimension_consistency,
    dimension_stats,
    mean_abs_difference,
    pair_cosines,
    pair_differences,
    pair_layer,
    pair_sums,
    per_category_mean_abs,
    rank_dimensions,
    relative_difference,
    relative_projection,
    sign_agreement_chance,
    token_difference_map,
)
from .readout import TokenScores, TopTokens, readout_directions
from .similarity import (
    LayerComparison,
    best_pairs,
    best_per_row,
    centred_label_similarity,
    cka_chance,
    cka_matrix,
    compare_layers,
    linear_cka,
    normalised_depth,
    procrustes_chance,
    procrustes_cosine,
    procrustes_cosine_matrix,
    procrustes_fit,
    rsa,
    rsa_matrix,
    shuffled_chance,
)

__all__ = [
    "METHODS",
    "ControlVectors",
    "LayerVector",
    "TokenScores",
    "TopTokens",
    "control_vectors",
    "layer_vector",
    "paired_differences",
    "random_unit_vectors",
    "readout_directions",
    "sign_agreement",
    "DimensionStats",
    "LabelStats",
    "MeanAccumulator",
    "PCAResult",
    "PairLayer",
    "PairSums",
    "align_sign",
    "auc",
    "best_pairs",
    "best_per_row",
    "bootstrap_stability",
    "centred_label_similarity",
    "cka_chance",
    "cka_matrix",
    "compare_layers",
    "LayerComparison",
    "cosine",
    "cosine_matrix",
    "diff_of_means",
    "dimension_consistency",
    "dimension_stats",
    "direction_norms",
    "direction_norms_by_layer",
    "directions_from_means",
    "first_principal_direction",
    "label_directions",
    "label_means",
    "linear_cka",
    "mean_abs_difference",
    "normalised_depth",
    "pair_cosines",
    "one_vs_rest_means",
    "pair_differences",
    "pair_layer",
    "pair_sums",
    "pca",
    "per_category_mean_abs",
    "procrustes_chance",
    "procrustes_cosine",
    "procrustes_cosine_matrix",
    "procrustes_fit",
    "project",
    "projection_separability",
    "held_out_layers",
    "projection_separability_layers",
    "rank_dimensions",
    "relative_difference",
    "relative_projection",
    "sign_agreement_chance",
    "rsa",
    "rsa_matrix",
    "shuffled_chance",
    "split_half_stability",
    "split_half_stability_layers",
    "token_difference_map",
    "typical_norm",
]
