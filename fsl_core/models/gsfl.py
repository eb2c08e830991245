"""GSFL-Net: group based deep shared feature learning.

Xuelu Li, Vishal Monga, "Group based Deep Shared Feature Learning for Fine-grained Image Classification",
BMVC 2019, arXiv:2004.01817.

The classes of a fine-grained set share much of their appearance. GSFL divides the classes into groups and
learns an autoencoder that splits a feature f into a *shared* component s (what a class has in common with
its group) and a *discriminative* component d; the classifier sees d only and s is dropped at inference.

    s = E_s(f),  d = E_d(f)          E_*: Dropout → Linear → Dropout → Linear → ReLU
    f̂ = D(s + d)                      D:   Linear → ReLU → Linear (linear output)
    logits = W·d
    L = CE(W·d, y) + 0.01·L_rec + 0.1·L_d + 0.1·L_s
    L_rec = mean (f̂ − f)²
    L_d   = mean_i mean_j (d_ij − c_{y_i, j})²              (d pulled to its class centre)
    L_s   = mean_i mean_j (s_ij − g_{group(y_i), j})²       (s pulled to its group's shared pattern)

Centres c_k (no gradient) start at zero and follow the centre-loss rule once per training step,
c_k ← c_k − α·Σ_{i: y_i = k}(c_k − d_i)/(1 + n_k), α = 0.01; the shared pattern of group j is the mean of
the centres of its classes, g_j = mean_{k ∈ j} c_k. Groups are fixed before training (K-means over the
class-mean features of a backbone, see ``fsl_core.models.grouping``).

This module holds the pieces both uses share (encoders, decoder, centre bank, loss) and the two uses:

- ``GSFLClassifier``: the paper's setting on one of our backbones. Its input feature is the global average
  pool of the backbone's last map, (B, C_high). It is trained with ordinary batches over the base classes
  (``fsl_core.engine.gsfl_training``) and is also an ``EpisodicModel``: few-shot episodes use ProtoNet-style
  prototypes on d (or on s + d, or on the raw pooled feature: option ``feature``).
- ``MapDecomposition``: the same decomposition as 1×1 convolutions on a feature map, a plug-in for the
  reconstruction heads (``build_model("hmdrn", gsfl=dict(num_classes=..., class_groups=[...]))``). Its
  centre terms compare each image's spatially averaged d and s with the centres; the reconstruction term is
  per location.

Departures from the authors' release: the decoder output is linear (a sigmoid cannot match a signed input),
L_s uses each sample's own label, and the losses average over the batch (``mean_reduction=False`` sums
L_d and L_s over the batch as the release does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..runtime import did_you_mean
from .base import Embedding, EpisodicModel, prototype_distances

FEATURES = ("d", "sd", "raw")
FEATURE_NAMES = {"raw": "raw", "s": "s", "d": "d", "sd": "s+d"}
"""How figures, tables and sentences write each feature of ``GSFLClassifier.decompose``: "sd" is s + d."""
SHARED_FROM = ("d", "sd")
NORMALISATIONS = ("none", "l2", "sqrt_l2")


# -- shared pieces --------------------------------------------------------------------------------------------
def _layer(in_dim: int, out_dim: int, spatial: bool) -> nn.Module:
    """A Linear layer, or its per-location twin (1×1 convolution) on maps."""
    return nn.Conv2d(in_dim, out_dim, kernel_size=1) if spatial else nn.Linear(in_dim, out_dim)


def make_encoder(
    in_dim: int, hidden: int, out_dim: int, dropout: float = 0.5, spatial: bool = False
) -> nn.Sequential:
    """E_s / E_d of GSFL-Net: Dropout → Linear → Dropout → Linear → ReLU (1×1 convolutions when ``spatial``).

    (B, in_dim) → (B, out_dim), or (B, in_dim, H, W) → (B, out_dim, H, W).
    """
    return nn.Sequential(
        nn.Dropout(dropout),
        _layer(in_dim, hidden, spatial),
        nn.Dropout(dropout),
        _layer(hidden, out_dim, spatial),
        nn.ReLU(),
    )


def make_decoder(in_dim: int, hidden: int, out_dim: int, spatial: bool = False) -> nn.Sequential:
    """Decoder of s + d: Linear → ReLU → Linear with a linear output (1×1 convolutions when ``spatial``)."""
    return nn.Sequential(_layer(in_dim, hidden, spatial), nn.ReLU(), _layer(hidden, out_dim, spatial))


def update_centres(centres: Tensor, features: Tensor, labels: Tensor, alpha: float) -> Tensor:
    """One centre-loss update, in place: c_k ← c_k − α·Σ_{i: y_i = k}(c_k − x_i)/(1 + n_k).

    centres: (num_classes, D); features: (B, D) (detached); labels: (B,) in 0..num_classes-1; n_k = number of
    samples of class k in the batch. Classes absent from the batch keep their centre. Returns ``centres``.
    """
    with torch.no_grad():
        features = features.detach().to(centres.dtype)
        counts = torch.bincount(labels, minlength=centres.shape[0]).to(centres.dtype)
        differences = torch.zeros_like(centres).index_add_(0, labels, centres[labels] - features)
        centres.sub_(alpha * differences / (1.0 + counts)[:, None])
    return centres


def group_patterns(centres: Tensor, class_groups: Tensor, groups: int) -> Tensor:
    """Shared pattern of each group: g_j = mean of the centres of its classes.

    centres: (num_classes, D); class_groups: (num_classes,) in 0..groups-1 → (groups, D) (zero for an empty
    group).
    """
    sums = torch.zeros(groups, centres.shape[1], dtype=centres.dtype, device=centres.device)
    sums.index_add_(0, class_groups, centres)
    counts = torch.bincount(class_groups, minlength=groups).clamp(min=1).to(centres.dtype)
    return sums / counts[:, None]


def _per_image(x: Tensor) -> Tensor:
    """(B, D) → (B, D); maps (B, D, H, W) → spatial average (B, D)."""
    return x.mean(dim=(2, 3)) if x.dim() == 4 else x


def check_class_groups(
    class_groups: Sequence[int] | None, num_classes: int, groups: int | None
) -> tuple[list[int], int]:
    """Validate a class → group assignment; None puts every class in group 0. Returns (assignment, K)."""
    if int(num_classes) < 1:
        raise ValueError(f"num_classes={num_classes}; expected the number of base (train) classes, >= 1")
    if class_groups is None:
        assignment = [0] * int(num_classes)
    else:
        assignment = [int(g) for g in class_groups]
        if len(assignment) != num_classes:
            raise ValueError(
                f"class_groups has {len(assignment)} entries; expected one group id per class (num_classes="
                f"{num_classes})"
            )
        if min(assignment) < 0:
            raise ValueError(
                f"class_groups holds negative group ids {sorted({g for g in assignment if g < 0})}"
            )
    used = max(assignment) + 1
    k = used if groups is None else int(groups)
    if k < 1 or used > k:
        raise ValueError(
            f"groups={groups} but class_groups uses group ids up to {used - 1}; expected ids 0..groups-1"
        )
    return assignment, k


class Decomposition(nn.Module):
    """Shared/discriminative decomposition with its centre bank and loss (GSFL-Net, Li & Monga 2019).

    Args:
        in_dim: dimension (channels) of the input feature f.
        num_classes: number of base classes (labels of ``loss`` lie in 0..num_classes-1).
        class_groups: group id of each base class (None: one group).
        groups: number of groups K (default: 1 + the largest id in ``class_groups``).
        hidden: width of the encoders' and the decoder's hidden layer (default ``in_dim``).
        dim: dimension of s and d (default ``in_dim``).
        dropout: dropout probability in the encoders (0.5 in the release).
        shared_from: group patterns from the centres of d ("d", the release) or of s + d ("sd").
        alpha: centre update rate α.
        rec_weight, d_weight, s_weight: weights of L_rec, L_d, L_s.
        mean_reduction: average L_d and L_s over the batch (True) or sum them (the release).
        spatial: 1×1 convolutions on maps (B, C, H, W) instead of Linear layers on vectors (B, C).

    Buffers (saved in the state dict): ``centres`` (num_classes, dim), ``centres_sd`` (num_classes, dim; only
    updated with ``shared_from="sd"``), ``patterns`` (K, dim), ``class_group`` (num_classes,) long.
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        class_groups: Sequence[int] | None = None,
        groups: int | None = None,
        hidden: int | None = None,
        dim: int | None = None,
        dropout: float = 0.5,
        shared_from: str = "d",
        alpha: float = 0.01,
        rec_weight: float = 0.01,
        d_weight: float = 0.1,
        s_weight: float = 0.1,
        mean_reduction: bool = True,
        spatial: bool = False,
    ) -> None:
        super().__init__()
        if shared_from not in SHARED_FROM:
            raise ValueError(f"shared_from={shared_from!r}; expected one of {list(SHARED_FROM)}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout={dropout}; expected a probability in [0, 1)")
        if min(rec_weight, d_weight, s_weight) < 0 or alpha < 0:
            raise ValueError(
                f"loss weights and alpha must be >= 0; got rec_weight={rec_weight}, d_weight={d_weight}, "
                f"s_weight={s_weight}, alpha={alpha}"
            )
        assignment, k = check_class_groups(class_groups, num_classes, groups)
        hidden = int(hidden or in_dim)
        dim = int(dim or in_dim)
        self.in_dim, self.hidden, self.dim = int(in_dim), hidden, dim
        self.num_classes, self.groups = int(num_classes), k
        self.shared_from = shared_from
        self.alpha = float(alpha)
        self.weights = {"rec": float(rec_weight), "d": float(d_weight), "s": float(s_weight)}
        self.mean_reduction = bool(mean_reduction)
        self.spatial = bool(spatial)
        self.shared_encoder = make_encoder(in_dim, hidden, dim, dropout, spatial)
        self.discriminative_encoder = make_encoder(in_dim, hidden, dim, dropout, spatial)
        self.decoder = make_decoder(dim, hidden, in_dim, spatial)
        self.register_buffer("centres", torch.zeros(num_classes, dim))
        self.register_buffer("centres_sd", torch.zeros(num_classes, dim))
        self.register_buffer("patterns", torch.zeros(k, dim))
        self.register_buffer("class_group", torch.tensor(assignment, dtype=torch.long))
        self.last_terms: dict[str, float] = {}
        """The unweighted loss terms of the latest ``loss`` call, for logging."""

    def assign_groups(self, class_groups: Sequence[int]) -> None:
        """Replace the class → group assignment (ids in 0..K-1) and recompute the group patterns."""
        assignment, _ = check_class_groups(class_groups, self.num_classes, self.groups)
        self.class_group.copy_(torch.tensor(assignment, dtype=torch.long))
        self.refresh_patterns()

    def refresh_patterns(self) -> None:
        """g_j = mean of the (d or s + d) centres of group j's classes."""
        source = self.centres if self.shared_from == "d" else self.centres_sd
        self.patterns.copy_(group_patterns(source, self.class_group, self.groups))

    def forward(self, f: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """f: (B, in_dim) or (B, in_dim, H, W) → (d, {"s", "d", "rec", "input"}) with d, s of dim ``dim``
        and the reconstruction ``rec`` shaped like f."""
        s = self.shared_encoder(f)
        d = self.discriminative_encoder(f)
        rec = self.decoder(s + d)
        return d, {"s": s, "d": d, "rec": rec, "input": f}

    def _check_labels(self, labels: Tensor) -> None:
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(
                f"GSFL labels must be base-class ids in 0..{self.num_classes - 1}; got "
                f"{int(labels.min())}..{int(labels.max())} (for a plug-in, pass the episode's class_ids)"
            )

    def loss(self, extras: dict[str, Tensor], labels: Tensor) -> Tensor:
        """Weighted rec_weight·L_rec + d_weight·L_d + s_weight·L_s (no cross-entropy).

        extras: the dict ``forward`` returned (possibly concatenated over several calls); labels: (B,) base-
        class ids. In training mode the centres (and group patterns) are updated afterwards, without gradient,
        from the detached per-image d (and s + d).
        """
        labels = labels.long().to(self.centres.device)
        self._check_labels(labels)
        s, d = _per_image(extras["s"]), _per_image(extras["d"])
        # L_rec; per sample, L_d (d to its class centre) and L_s (s to its group's shared pattern)
        rec_loss = F.mse_loss(extras["rec"], extras["input"])
        d_error = (d - self.centres[labels]).pow(2).mean(dim=1)
        s_error = (s - self.patterns[self.class_group[labels]]).pow(2).mean(dim=1)
        reduce = torch.mean if self.mean_reduction else torch.sum
        d_loss, s_loss = reduce(d_error), reduce(s_error)
        self.last_terms = {
            "rec": float(rec_loss.detach()),
            "d": float(d_loss.detach()),
            "s": float(s_loss.detach()),
        }
        total = self.weights["rec"] * rec_loss + self.weights["d"] * d_loss + self.weights["s"] * s_loss
        if self.training:
            update_centres(self.centres, d, labels, self.alpha)
            if self.shared_from == "sd":
                update_centres(self.centres_sd, s + d, labels, self.alpha)
            self.refresh_patterns()
        return total


# -- plug-in for feature maps ---------------------------------------------------------------------------------
class MapDecomposition(Decomposition):
    """GSFL decomposition of a feature map by 1×1 convolutions: only the d-map feeds the reconstruction head.

    channels: C of the map; d has C channels too. The reconstruction term compares each location's
    reconstruction with the input; the centre terms compare each image's spatially averaged d and s with the
    centres of the base classes (the centres describe classes, not locations; averaging keeps background
    locations from being pulled to a class centre). Dropout defaults to 0.1 here: 0.5 on every location of a
    small map removes too much of what the head compares. Groups are over base classes only; novel classes
    never need one (the loss is only used in training).
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        class_groups: Sequence[int] | None = None,
        dropout: float = 0.1,
        **options: Any,
    ) -> None:
        if "dim" in options and options["dim"] not in (None, channels):
            raise ValueError(
                f"MapDecomposition keeps the channel count: dim={options['dim']} must equal {channels}"
            )
        options.pop("dim", None)
        accepted = ["num_classes", "class_groups", "groups", "hidden", "dropout", "shared_from", "alpha"]
        accepted += ["rec_weight", "d_weight", "s_weight", "mean_reduction"]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            hints = ", ".join(f"{n!r}{hint}" for n in unknown if (hint := did_you_mean(n, accepted)))
            raise ValueError(
                f"unknown gsfl option(s) {unknown}{': ' + hints if hints else ''}; accepted: "
                f"{', '.join(accepted)}"
            )
        super().__init__(
            channels, num_classes, class_groups, dim=channels, dropout=dropout, spatial=True, **options
        )

    def forward(self, fmap: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """fmap: (B, C, H, W) → (d (B, C, H, W), {"s", "d", "rec": (B, C, H, W), "input": fmap})."""
        if fmap.dim() != 4 or fmap.shape[1] != self.in_dim:
            raise ValueError(
                f"MapDecomposition expects maps (B, {self.in_dim}, H, W); got {tuple(fmap.shape)}"
            )
        return super().forward(fmap)


# -- the classifier -------------------------------------------------------------------------------------------
def normalise_feature(f: Tensor, how: str) -> Tensor:
    """(B, D) → (B, D): "none", "l2" (unit norm) or "sqrt_l2" (signed square root, then unit norm; release)."""
    if how == "sqrt_l2":
        f = f.sign() * f.abs().add(1e-8).sqrt()
    if how in ("l2", "sqrt_l2"):
        f = F.normalize(f, dim=1)
    return f


class GSFLClassifier(EpisodicModel):
    """GSFL-Net on one of our backbones (Li & Monga, BMVC 2019, arXiv:2004.01817; see the module docstring).

    Input feature f: global average pool of the backbone's last map, (B, C_high) (C_high = 64 for Conv-4, 640
    for ResNet-12), optionally normalised. f → E_s, E_d → s, d (B, dim); decoder on s + d; classifier W·d
    over the ``num_classes`` base classes.

    Two ways to use it:
      - standard batches: ``classify(images) → logits (B, num_classes)``, ``batch_loss(images, labels) →
        (loss, logits)`` (cross-entropy on d + the decomposition loss; updates the centres in training mode);
      - few-shot episodes (``EpisodicModel``): ``embed(images, query) → {"last": (B, D)}`` where the feature
        is d, s + d or the raw pooled f (option ``feature``, or ``set_feature`` later); ``head`` = ProtoNet-style
        prototypes with logits = −squared Euclidean distance. ``episode_loss`` with ``class_ids`` adds the
        decomposition loss, so episodic training works too.

    Args:
        backbone: returns (mid, high) maps; ``backbone.channels`` = (C_mid, C_high).
        num_classes: number of base (train) classes.
        groups: number of groups K.
        class_groups: group of each base class (None: all in group 0 until ``assign_groups``).
        hidden: hidden width of encoders and decoder (default 512).
        dim: dimension of s and d (default C_high).
        feature: embedding of few-shot episodes: "d" (GSFL), "sd" (s + d) or "raw" (pooled backbone feature).
        normalise: "none", "l2" or "sqrt_l2" (signed square root + L2 normalisation, as the release).
        dropout, shared_from, alpha, rec_weight, d_weight, s_weight, mean_reduction: see ``Decomposition``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        config: dict[str, Any],
        num_classes: int | None = None,
        groups: int | None = None,
        class_groups: Sequence[int] | None = None,
        hidden: int = 512,
        dim: int | None = None,
        feature: str = "d",
        normalise: str = "none",
        dropout: float = 0.5,
        shared_from: str = "d",
        alpha: float = 0.01,
        rec_weight: float = 0.01,
        d_weight: float = 0.1,
        s_weight: float = 0.1,
        mean_reduction: bool = True,
    ) -> None:
        super().__init__(backbone, config)
        if num_classes is None:
            raise ValueError(
                "the gsfl model needs num_classes=<number of base (train) classes>, e.g. "
                "build_model('gsfl', 'conv4', num_classes=60, groups=5, class_groups=[...])"
            )
        if normalise not in NORMALISATIONS:
            raise ValueError(f"normalise={normalise!r}; expected one of {list(NORMALISATIONS)}")
        self.set_feature(feature)
        self.normalise = normalise
        in_dim = int(backbone.channels[1])
        self.decomposition = Decomposition(
            in_dim,
            num_classes,
            class_groups,
            groups,
            hidden,
            dim,
            dropout,
            shared_from,
            alpha,
            rec_weight,
            d_weight,
            s_weight,
            mean_reduction,
        )
        self.classifier = nn.Linear(self.decomposition.dim, int(num_classes))
        self.config["groups"] = self.decomposition.groups

    # -- configuration --------------------------------------------------------------------------------------
    def set_feature(self, feature: str) -> None:
        """Choose the few-shot embedding: "d", "sd" or "raw" (does not change ``config``)."""
        if feature not in FEATURES:
            raise ValueError(f"feature={feature!r}; expected one of {list(FEATURES)}")
        self.feature = feature

    def assign_groups(self, class_groups: Sequence[int]) -> None:
        """Fix the class → group assignment (ids in 0..groups-1) before training; stored in ``config`` too."""
        self.decomposition.assign_groups(class_groups)
        self.config["class_groups"] = [int(g) for g in class_groups]

    @property
    def num_classes(self) -> int:
        return self.decomposition.num_classes

    # -- per image ------------------------------------------------------------------------------------------
    def pooled(self, images: Tensor) -> Tensor:
        """images (B, 3, H, W) → f (B, C_high): global average pool of the last map, normalised."""
        high = self.extract(images)[1]
        return normalise_feature(high.mean(dim=(2, 3)), self.normalise)

    def decompose(self, images: Tensor) -> dict[str, Tensor]:
        """images (B, 3, H, W) → {"raw": f (B, C_high), "s", "d", "sd": (B, dim), "rec": (B, C_high)}."""
        f = self.pooled(images)
        d, extras = self.decomposition(f)
        return {"raw": f, "s": extras["s"], "d": d, "sd": extras["s"] + d, "rec": extras["rec"]}

    def encode(self, maps: tuple[Tensor, Tensor], query: bool) -> Embedding:
        """maps → {"last": (B, D)} (the chosen feature) plus {"gsfl_<key>": ...} while training."""
        f = normalise_feature(maps[1].mean(dim=(2, 3)), self.normalise)
        d, extras = self.decomposition(f)
        chosen = {"d": d, "sd": extras["s"] + d, "raw": f}[self.feature]
        out = {"last": chosen}
        if self.training:
            out.update({f"gsfl_{key}": value for key, value in extras.items()})
        return out

    # -- standard batches -----------------------------------------------------------------------------------
    def classify(self, images: Tensor) -> Tensor:
        """images (B, 3, H, W) → logits (B, num_classes) = W·d."""
        d, _ = self.decomposition(self.pooled(images))
        return self.classifier(d)

    def batch_loss(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """images (B, 3, H, W), labels (B,) base-class ids → (CE(W·d, y) + decomposition loss, logits (B, K)).

        In training mode the centres are updated (once per call). ``self.last_terms`` holds the terms.
        """
        d, extras = self.decomposition(self.pooled(images))
        logits = self.classifier(d)
        ce = F.cross_entropy(logits, labels)
        total = ce + self.decomposition.loss(extras, labels)
        self.last_terms = {"ce": float(ce.detach()), **self.decomposition.last_terms}
        return total, logits

    # -- per episode ----------------------------------------------------------------------------------------
    def head(
        self,
        support: Embedding,
        support_labels: Tensor,
        query: Embedding,
        way: int,
        details: dict[str, Any] | None = None,
    ) -> Tensor:
        """Prototypes (way, D) from support (way*shot, D); query (n_query, D) → logits −‖q − p‖² (n_query, way)."""
        # ProtoNet's class means and squared distances (Snell et al., NeurIPS 2017, Eq. 1 and 2)
        distances = prototype_distances(support["last"], support_labels, query["last"], way)
        if details is not None:
            details["distances"] = distances.detach()
            details["feature"] = self.feature
        return -distances

    def auxiliary_loss(
        self,
        support: Embedding,
        support_labels: Tensor,
        query: Embedding,
        query_labels: Tensor,
        way: int,
        class_ids: Tensor | None,
    ) -> Tensor | None:
        """The decomposition loss when the episode's global class ids are known (episodic training)."""
        if class_ids is None or "gsfl_s" not in support:
            return None
        labels = class_ids.to(support_labels.device)[torch.cat([support_labels, query_labels])]
        extras = {
            key[5:]: torch.cat([support[key], query[key]]) for key in support if key.startswith("gsfl_")
        }
        return self.decomposition.loss(extras, labels)


__all__ = [
    "FEATURES",
    "Decomposition",
    "GSFLClassifier",
    "MapDecomposition",
    "check_class_groups",
    "group_patterns",
    "make_decoder",
    "make_encoder",
    "normalise_feature",
    "update_centres",
]
