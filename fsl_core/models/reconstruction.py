"""Feature-map reconstruction heads: a query's tokens are rebuilt from the pooled support tokens of each class.

- ``AttentionReconstruction``: the cross-attention reconstruction of BiFRN (Jijie Wu, Dongliang Chang,
  Aneeshan Sain, Xiaoxu Li, Zhanyu Ma, Jie Cao, Jun Guo, Yi-Zhe Song, "Bi-Directional Feature Reconstruction
  Network for Fine-Grained Few-Shot Image Classification", AAAI 2023, arXiv:2211.17161) with one shared W_qkv
  (C→3C, no bias) and dropout on the attention probabilities; one-way ("query from support", as HMDRN: Luo et
  al., arXiv:2506.20263) or bidirectional (also "support from query", BiFRN).
- ``RidgeReconstruction``: the closed-form ridge regression of FRN (Davis Wertheimer, Luming Tang, Bharath
  Hariharan, "Few-Shot Classification with Feature Map Reconstruction Networks", CVPR 2021, arXiv:2012.01506),
  solved with a Cholesky factorisation in its primal (kN×kN) or Woodbury (C×C) form.

Both take support tokens pooled per class (way, kN, C) (k shots of N tokens) and query tokens (n_query, N, C),
and return per-direction squared errors per token; the network turns them into class scores.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .cross_attention import cross_attention, squared_error
from .products import Linear, role_projections


class AttentionReconstruction(nn.Module):
    """Cross-attention reconstruction between one episode's query images and its classes.

    Args:
        channels: C.
        bidirectional: also reconstruct each class's support tokens from each query (BiFRN).
        dropout: dropout on attention probabilities during training (0.1 in BiFRN/HMDRN).
    """

    def __init__(self, channels: int, bidirectional: bool = False, dropout: float = 0.1) -> None:
        super().__init__()
        self.qkv = Linear(channels, 3 * channels, bias=False)
        self.bidirectional = bidirectional
        self.dropout = dropout

    def forward(
        self, support: Tensor, query: Tensor, reconstruction: bool = True
    ) -> dict[str, dict[str, Tensor]]:
        """support: (way, kN, C) tokens pooled per class; query: (n_query, N, C).

        Returns {"query": {"error": (n_query, way, N), "reconstruction": (n_query, way, N, C)}} and, when
        bidirectional, {"support": {"error": (n_query, way, kN)}}. All n_query·N query tokens attend to each
        class at once (``cross_attention``); they are never copied per class. Without ``reconstruction`` the
        rebuilt tokens are left out, and while training on CPU never held: only their errors are made.
        """
        way, kn, c = support.shape
        n_query, n = query.shape[:2]
        q_q, v_q = role_projections(self.qkv, query, "qv")
        k_s, v_s = role_projections(self.qkv, support, "kv")
        # query from support: softmax(Q_q K_cᵀ/√C) V_c for every class c, compared with the query's own values
        error, rebuilt = self._errors(q_q.reshape(-1, c), k_s, v_s, v_q.reshape(-1, c), reconstruction)
        out = {"query": {"error": error.view(way, n_query, n).permute(1, 0, 2)}}
        if rebuilt is not None:
            out["query"]["reconstruction"] = rebuilt.view(way, n_query, n, c).permute(1, 0, 2, 3)
        if self.bidirectional:  # support from query (BiFRN's second direction)
            (q_s,), (k_q,) = role_projections(self.qkv, support, "q"), role_projections(self.qkv, query, "k")
            error_support, _ = self._errors(q_s.reshape(-1, c), k_q, v_q, v_s.reshape(-1, c), False)
            out["support"] = {"error": error_support.view(n_query, way, kn)}
        return out

    def _errors(
        self, queries: Tensor, keys: Tensor, values: Tensor, target: Tensor, keep_rebuilt: bool
    ) -> tuple[Tensor, Tensor | None]:
        """Squared errors (B, L) of the tokens rebuilt from each entry's keys and values against the target
        (L, C), and the rebuilt tokens (B, L, C) when ``keep_rebuilt``."""
        if not keep_rebuilt:
            return cross_attention(queries, keys, values, self.dropout, self.training, target=target), None
        rebuilt = cross_attention(queries, keys, values, self.dropout, self.training)
        return squared_error(rebuilt, target), rebuilt


class RidgeReconstruction(nn.Module):
    """FRN's ridge reconstruction (Wertheimer et al., CVPR 2021): the query feature map Q (N, C) is rebuilt
    from class c's support features S (kN, C) with the ridge-regression weights
    W̄ = argmin_W ‖Q − W S‖² + λ‖W‖²,

        Q̄_c = ρ · W̄ S = ρ · Q Sᵀ(S Sᵀ + λI)⁻¹ S = ρ · Q (SᵀS + λI)⁻¹ SᵀS    (the last by Woodbury's identity),

    with the learned regulariser λ = (kN/C)·e^α (+ 1e-6 here) and the learned recalibration ρ = e^β, α and β
    scalars initialised to 0. The class score is minus the mean squared token error ‖Q − Q̄_c‖²/N.

    Args:
        form: "auto" (Woodbury when kN > C, as FRN does), "primal" (kN×kN system) or "woodbury" (C×C system).
    """

    def __init__(self, form: str = "auto") -> None:
        super().__init__()
        if form not in ("auto", "primal", "woodbury"):
            raise ValueError(f"ridge form {form!r}; expected 'auto', 'primal' or 'woodbury'")
        self.form = form
        self.alpha = nn.Parameter(torch.zeros(1))
        self.beta = nn.Parameter(torch.zeros(1))

    def projection(self, support: Tensor) -> Tensor:
        """support: (way, kN, C) → W (way, C, C) with Q̄_c = Q·W_c (ρ included), in support's dtype.

        Computed in float32 whatever autocast says: the ridge system is solved by a Cholesky factorisation,
        which bfloat16 products would spoil, and CUDA's autocast would hand ``cholesky_solve`` a bfloat16
        Gram matrix beside a float32 factor, which it refuses."""
        way, kn, c = support.shape
        with torch.autocast(support.device.type, enabled=False):
            s = support.float()
            lam = (kn / c) * self.alpha.exp() + 1e-6  # λ = (kN/C)·e^α
            woodbury = self.form == "woodbury" or (self.form == "auto" and kn > c)
            if woodbury:
                gram = s.transpose(1, 2) @ s  # SᵀS (way, C, C); W = (SᵀS + λI)⁻¹ SᵀS
                system = gram + lam * torch.eye(c, device=s.device)
                weights = torch.cholesky_solve(gram, torch.linalg.cholesky(system))
            else:
                # S Sᵀ + λI (way, kN, kN)
                system = s @ s.transpose(1, 2) + lam * torch.eye(kn, device=s.device)
                weights = s.transpose(1, 2) @ torch.cholesky_solve(s, torch.linalg.cholesky(system))
            return (self.beta.exp() * weights).to(support.dtype)  # ρ = e^β

    def forward(
        self, support: Tensor, query: Tensor, reconstruction: bool = True
    ) -> dict[str, dict[str, Tensor]]:
        """support: (way, kN, C); query: (n_query, N, C) →
        {"query": {"error": (n_query, way, N), "reconstruction": (n_query, way, N, C)}}; the reconstruction is
        made for the error anyway, so it is returned whatever ``reconstruction`` says."""
        rebuilt = torch.einsum("qnc,wcd->qwnd", query, self.projection(support))
        return {"query": {"error": squared_error(rebuilt, query[:, None]), "reconstruction": rebuilt}}


def orthogonality_loss(support: Tensor) -> Tensor:
    """FRN's auxiliary loss Σ_{i<j} ‖Ŝ_i Ŝ_jᵀ‖²_F over class pairs, which pushes the support features of
    different classes apart; support: (way, kN, C), divided by its global 2-norm first → scalar. (Weighted by
    0.03 in FRN.)"""
    s = support / support.norm()
    gram = torch.einsum("imc,jnc->ijmn", s, s).pow(2).sum((-1, -2))  # (way, way)
    return torch.triu(gram, diagonal=1).sum()


__all__ = ["AttentionReconstruction", "RidgeReconstruction", "orthogonality_loss"]
