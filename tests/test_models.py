"""Models against their papers: parameter counts, shapes, formulas, masks, FRN's solve, reference weights.

The papers: Wertheimer, Tang & Hariharan, "Few-Shot Classification with Feature Map Reconstruction Networks",
CVPR 2021, arXiv:2012.01506 (FRN); Wu et al., "Bi-Directional Feature Reconstruction Network for Fine-Grained
Few-Shot Image Classification", AAAI 2023, arXiv:2211.17161 (BiFRN); Luo, Hu, Wan, Yang, Jiang & Wei,
"Hierarchical Mask-Enhanced Dual Reconstruction Network for Few-Shot Fine-Grained Image Classification", 2025,
arXiv:2506.20263 (HMDRN). ``tests/data/hmdrn_conv4_checkpoint_keys.json`` lists the tensor names and shapes of
the HMDRN authors' released Conv-4 checkpoints.

Golden logits: every model on both backbones, plus HMDRN's ablation switches, the GSFL plug-in and GSFL's
base-class head, run one fixed episode with fixed weights; ``tests/data/golden_logits.json`` holds the
float32 logits and the cases, and ``tests/data/make_golden.py`` (which also defines the cases, the weights
and the episode) writes that file. Run the script only when a change of what a model computes is intended:

    .venv/bin/python tests/data/make_golden.py --check   # how far each case is from its stored values
    .venv/bin/python tests/data/make_golden.py           # rewrite the stored values
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fsl_core.models import (
    build_model,
    check_model_options,
    count_trainable,
    load_model,
    load_reference_checkpoint,
    save_model,
)
from fsl_core.models.backbones import BACKBONES, Conv4, in_papers_form
from fsl_core.models.factory import MODEL_NAMES
from fsl_core.models.reconstruction import AttentionReconstruction, RidgeReconstruction, orthogonality_loss
from fsl_core.models.transformer import MaskedTransformer, norm_threshold_mask, sinusoidal_positions

REFERENCE = Path(__file__).resolve().parent / "data" / "hmdrn_conv4_checkpoint_keys.json"


def _load_golden_script():
    path = Path(__file__).resolve().parent / "data" / "make_golden.py"
    spec = importlib.util.spec_from_file_location("make_golden", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


golden = _load_golden_script()
GOLDEN = json.loads(golden.GOLDEN.read_text())


def episode(way: int = 3, shot: int = 2, query: int = 2, size: int = 84, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    support = torch.randn(way * shot, 3, size, size, generator=g)
    labels = torch.arange(way).repeat_interleave(shot)
    queries = torch.randn(way * query, 3, size, size, generator=g)
    return support, labels, queries, torch.arange(way).repeat_interleave(query)


@pytest.mark.parametrize(
    "name,backbone,expected",
    [
        ("hmdrn", "conv4", 288_067),
        ("hmdrn", "resnet12", 23_198_403),
        ("bifrn", "conv4", 150_531),
        ("bifrn", "resnet12", 16_116_483),
        ("frn", "conv4", 113_091),
        ("frn", "resnet12", 12_424_323),
        ("protonet", "conv4", 113_089),
    ],
)
def test_trainable_parameter_counts(name: str, backbone: str, expected: int) -> None:
    assert count_trainable(build_model(name, backbone)) == expected


@pytest.mark.parametrize(
    "backbone,parts",
    [
        (
            "conv4",
            {
                "backbone": 113_088,
                "transformers.last": 75_200,
                "transformers.mid": 75_200,
                "reconstructions.last": 12_288,
                "reconstructions.mid": 12_288,
            },
        ),
        (
            "resnet12",
            {
                "backbone": 12_424_320,
                "transformers.last": 7_387_520,
                "transformers.mid": 1_850_560,
                "reconstructions.last": 1_228_800,
                "reconstructions.mid": 307_200,
            },
        ),
    ],
)
def test_hmdrn_parameter_breakdown(backbone: str, parts: dict[str, int]) -> None:
    model = build_model("hmdrn", backbone)
    for path, expected in parts.items():
        assert count_trainable(model.get_submodule(path)) == expected, path
    assert not any("positions" in n for n, _ in model.named_parameters())


@pytest.mark.parametrize(
    "backbone,mid,high", [("conv4", (64, 10, 10), (64, 5, 5)), ("resnet12", (320, 10, 10), (640, 5, 5))]
)
def test_feature_shapes(backbone: str, mid: tuple, high: tuple) -> None:
    model = build_model("hmdrn", backbone).eval()
    with torch.no_grad():
        m, h = model.extract(torch.randn(2, 3, 84, 84))
        emb = model.embed(torch.randn(2, 3, 84, 84), query=True)
    assert tuple(m.shape[1:]) == mid and tuple(h.shape[1:]) == high
    assert emb["last"].shape == (2, 25, high[0]) and emb["mid"].shape == (2, 100, mid[0])
    assert emb["mask_last"].shape == (2, 3, 2, 25) and emb["mask_mid"].dtype == torch.bool


@pytest.mark.parametrize(
    "memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pooling_before_relu_gives_the_same_values(
    dtype: torch.dtype, memory_format: torch.memory_format
) -> None:
    """The end of a Conv-4 block, pooling before the ReLU, against the papers' ReLU then pool: equal outputs and
    gradients, ties and zeros included (inputs drawn from nine values, so many 2×2 windows hold ties, some only
    non-positive values)."""
    g = torch.Generator().manual_seed(0)
    inputs = (torch.randint(-4, 5, (6, 8, 12, 12), generator=g) * 0.25).to(dtype, memory_format=memory_format)
    upstream = torch.randn(6, 8, 6, 6, generator=g).to(dtype)
    conv4 = Conv4()
    ours, papers = conv4.blocks[0][2:], in_papers_form(conv4).blocks[0][2:]
    assert [type(m) for m in ours] == [torch.nn.MaxPool2d, torch.nn.ReLU]
    outputs, grads = [], []
    for tail in (ours, papers):
        x = inputs.clone().requires_grad_()
        out = tail(x.clone())  # a copy: the papers' form's ReLU works in place on its input
        outputs.append(out)
        grads.append(torch.autograd.grad(out, x, upstream)[0])
    assert torch.equal(*outputs) and torch.equal(*grads)
    largest = F.max_pool2d(inputs.float(), 2)
    holding_largest = (inputs.float() == F.interpolate(largest, scale_factor=2)).float()
    holders_per_window = F.avg_pool2d(holding_largest, 2) * 4
    assert (holders_per_window > 1).float().mean() > 0.15 and (largest == 0).any() and (largest < 0).any()


@pytest.mark.parametrize(
    "memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"]
)
@pytest.mark.parametrize("bfloat16", [False, True], ids=["float32", "bf16"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("backbone", ["conv4", "resnet12"])
def test_backbones_match_the_papers_form(
    backbone: str, training: bool, bfloat16: bool, memory_format: torch.memory_format
) -> None:
    """A forward and backward pass of each backbone against ``in_papers_form`` (Conv-4's ReLU before the pool,
    ResNet-12's activations on new tensors): equal features, equal gradients of every parameter, equal BatchNorm
    statistics, in training and evaluation, float32 and bfloat16 autocast, both memory formats."""
    torch.manual_seed(0)
    ours = BACKBONES[backbone]().train(training).to(memory_format=memory_format)
    papers = in_papers_form(ours)
    images = torch.randn(4, 3, 32, 32).contiguous(memory_format=memory_format)
    results, calls = [], []
    for model in (ours, papers):
        seen = []  # (elements, in place) of each activation call
        for module in model.modules():
            if isinstance(module, (torch.nn.ReLU, torch.nn.LeakyReLU)):
                module.register_forward_hook(
                    lambda _, given, out, seen=seen: seen.append((given[0].numel(), out is given[0]))
                )
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            mid, high = model(images)
        (mid.float().square().sum() + high.float().pow(3).sum()).backward()
        results.append([mid, high, *(p.grad for p in model.parameters()), *model.buffers()])
        calls.append(seen)
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))
    # elements activated for 4 images of 32 px, block i's map before its pool holding 4·C·(32/2^i)²: Conv-4's ReLU,
    # before the pool in the papers' form and after it in ours; ResNet-12's LeakyReLU, three times before the pool
    (ours_calls, papers_calls), elements = calls, [sum(n for n, _ in seen) for seen in calls]
    if backbone == "conv4":
        full_size = [4 * 64 * (32 >> i) ** 2 for i in range(4)]
        assert elements == [sum(full_size) // 4, sum(full_size)]
    else:
        full_size = [4 * c * (32 >> i) ** 2 for i, c in enumerate((64, 160, 320, 640))]
        assert elements == [3 * sum(full_size)] * 2
    # ours always in place; the papers' form only in Conv-4, whose ReLU always was
    assert all(in_place for _, in_place in ours_calls)
    assert all(in_place == (backbone == "conv4") for _, in_place in papers_calls)


def test_papers_form_names_what_it_takes() -> None:
    with pytest.raises(TypeError, match="Conv4 or ResNet12 backbone, not Linear"):
        in_papers_form(torch.nn.Linear(2, 2))


def test_positional_embedding_formula_and_fixed() -> None:
    table = sinusoidal_positions(25, 64)[0]
    p, i = 7, 10
    assert table[p, i] == pytest.approx(math.sin(p / 10000 ** (2 * (i // 2) / 64)), abs=1e-6)
    assert table[p, i + 1] == pytest.approx(math.cos(p / 10000 ** (2 * (i // 2) / 64)), abs=1e-6)
    transformer = MaskedTransformer(64, 25)
    assert all("positions" not in name for name, _ in transformer.named_parameters())
    assert torch.equal(transformer.positions[0], table)


def test_mask_rule_strictly_above_mean() -> None:
    q = torch.zeros(1, 1, 4, 2)
    q[0, 0, :, 0] = torch.tensor([1.0, 2.0, 3.0, 0.0])  # energies 1, 4, 9, 0; mean 3.5
    assert norm_threshold_mask(q)[0, 0].tolist() == [False, True, True, False]
    equal = torch.ones(1, 2, 5, 3)  # all equal to the mean: nothing is strictly above
    assert not norm_threshold_mask(equal).any()


def test_mask_only_on_queries_in_train_and_eval() -> None:
    model = build_model("hmdrn", "conv4")
    images = torch.randn(3, 3, 84, 84)
    for mode in (model.train, model.eval):
        mode()
        support = model.embed(images, query=False)
        query = model.embed(images, query=True)
        assert "mask_last" not in support and "mask_last" in query
        kept = query["mask_mid"].float().mean()
        assert 0.0 < kept < 1.0
    assert model.query_embedding_differs
    assert not build_model("bifrn").query_embedding_differs


def test_masked_attention_matches_manual_computation() -> None:
    torch.manual_seed(0)
    transformer = MaskedTransformer(8, 6, layers=1, heads=2, mask=True).eval()
    layer = transformer.layers[0]
    x = torch.randn(1, 6, 8)
    out, masks = transformer(x, query=True)
    h = x + transformer.positions
    normed = layer.norm_pre(h)
    q, k, v = layer.attn.qkv(normed).reshape(1, 6, 3, 2, 4).permute(2, 0, 3, 1, 4)
    energy = q.pow(2).sum(-1)
    keep = energy > energy.mean(-1, keepdim=True)
    q = q * keep[..., None]
    att = ((q @ k.transpose(-1, -2)) / math.sqrt(4)).softmax(-1) @ v
    h = layer.norm_post(h + layer.attn.proj(att.transpose(1, 2).reshape(1, 6, 8)))
    h = h + layer.ffn_out(F.gelu(layer.ffn_in(h)))
    assert torch.allclose(out, transformer.norm_final(h), atol=1e-5)
    assert torch.equal(masks[:, 0], keep)


def test_attention_reconstruction_scores_match_formula() -> None:
    torch.manual_seed(1)
    head = AttentionReconstruction(4, bidirectional=True, dropout=0.1).eval()
    support, query = torch.randn(2, 6, 4), torch.randn(3, 5, 4)
    out = head(support, query)
    w = head.qkv.weight
    qq, kq, vq = (query @ w.T).chunk(3, -1)
    qs, ks, vs = (support @ w.T).chunk(3, -1)
    for i in range(3):
        for c in range(2):
            q_hat = ((qq[i] @ ks[c].T) / 2).softmax(-1) @ vs[c]
            s_hat = ((qs[c] @ kq[i].T) / 2).softmax(-1) @ vq[i]
            assert torch.allclose(out["query"]["error"][i, c].sum(), (vq[i] - q_hat).pow(2).sum(), atol=1e-5)
            assert torch.allclose(
                out["support"]["error"][i, c].sum(), (vs[c] - s_hat).pow(2).sum(), atol=1e-5
            )


def test_bifrn_logits_follow_the_fused_formula() -> None:
    torch.manual_seed(2)
    model = build_model("bifrn").eval()
    s, y, q, _ = episode()
    with torch.no_grad():
        logits = model(s, y, q)
        support, query = model.embed_episode(s, q)
        out = model.reconstructions["last"](support["last"].reshape(3, -1, 64), query["last"])
    expected = (0.5 * -out["support"]["error"].sum(-1) + 0.5 * -out["query"]["error"].sum(-1)) / (64 * 25)
    assert torch.allclose(logits, expected, atol=1e-5)


def test_hmdrn_with_bifrn_settings_equals_bifrn() -> None:
    s, y, q, _ = episode()
    torch.manual_seed(3)
    bifrn = build_model("bifrn").eval()
    torch.manual_seed(3)
    hmdrn = build_model(
        "hmdrn",
        levels="last",
        mask=False,
        transformer_layers=1,
        transformer_heads=1,
        reconstruction="bidirectional",
    ).eval()
    with torch.no_grad():
        assert torch.equal(bifrn(s, y, q), hmdrn(s, y, q))


def test_ridge_forms_agree_and_use_a_solve(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("an explicit inverse was used")

    monkeypatch.setattr(torch, "inverse", forbidden)
    monkeypatch.setattr(torch.linalg, "inv", forbidden)
    torch.manual_seed(4)
    support, query = torch.randn(3, 10, 6), torch.randn(4, 5, 6)
    primal, woodbury = RidgeReconstruction("primal"), RidgeReconstruction("woodbury")
    a, b = primal(support, query)["query"]["error"], woodbury(support, query)["query"]["error"]
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    # direct formula: Q Sᵀ (S Sᵀ + λI)⁻¹ S with λ = kN/C + 1e-6
    s0 = support[0].double()
    lam = 10 / 6 + 1e-6
    rebuilt = (
        query.double() @ s0.T @ torch.linalg.solve(s0 @ s0.T + lam * torch.eye(10, dtype=torch.float64), s0)
    )
    assert torch.allclose(a[:, 0], (rebuilt - query.double()).pow(2).sum(-1).float(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("form", ["primal", "woodbury"])
def test_ridge_projection_is_float32_under_bfloat16_autocast(form: str) -> None:
    """The ridge system is solved in float32 whatever autocast says, so the projection under bfloat16
    autocast is the float32 one, bit for bit (rounded to the support's dtype). Under CUDA's autocast a
    bfloat16 Gram matrix would reach ``cholesky_solve`` beside a float32 factor, which it refuses."""
    torch.manual_seed(6)
    ridge = RidgeReconstruction(form)
    support = torch.randn(3, 10, 6)
    plain = ridge.projection(support)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(ridge.projection(support), plain)
        rounded = support.bfloat16()  # as a bfloat16 backbone hands it over
        assert torch.equal(ridge.projection(rounded), ridge.projection(rounded.float()).bfloat16())


def test_ridge_survives_rank_deficient_support() -> None:
    support = torch.ones(2, 30, 8)  # rank one
    support[1] = 0.0  # rank zero
    for form in ("primal", "woodbury"):
        err = RidgeReconstruction(form)(support, torch.randn(3, 4, 8))["query"]["error"]
        assert torch.isfinite(err).all()


def test_frn_logits_and_auxiliary_loss() -> None:
    torch.manual_seed(5)
    model = build_model("frn").eval()
    s, y, q, qy = episode()
    with torch.no_grad():
        logits = model(s, y, q)
        support, query = model.embed_episode(s, q)
        err = model.reconstructions["last"](support["last"].reshape(3, -1, 64), query["last"])["query"][
            "error"
        ]
    assert torch.allclose(logits, -err.mean(-1), atol=1e-5)  # γ = 1, fixed weight 1, mean over tokens
    model.train()
    loss, _ = model.episode_loss(s, y, q, qy)
    torch.manual_seed(5)
    support, query = model.embed_episode(s, q)
    ce = F.cross_entropy(model.head(support, y, query, 3), qy)
    ortho = 0.03 * orthogonality_loss(support["last"].reshape(3, -1, 64))
    assert ortho > 0
    assert torch.allclose(loss, ce + ortho, atol=1e-5)


def test_orthogonality_loss_by_hand() -> None:
    s = torch.zeros(3, 1, 2)
    s[0, 0, 0], s[1, 0, 0], s[2, 0, 1] = 1.0, 1.0, 1.0  # classes 0 and 1 parallel, class 2 orthogonal
    # global norm sqrt(3) → each pair product 1/3 → squared 1/9, one non-orthogonal pair
    assert orthogonality_loss(s).item() == pytest.approx(1 / 9)


@pytest.mark.parametrize("name", ["protonet", "frn", "bifrn", "hmdrn"])
def test_cached_embeddings_give_the_same_logits(name: str) -> None:
    torch.manual_seed(6)
    model = build_model(name).eval()
    s, y, q, _ = episode()
    with torch.no_grad():
        full = model(s, y, q)
        cached = model.head(model.embed(s, query=False), y, model.embed(q, query=True), 3)
    assert torch.allclose(full, cached, atol=1e-5)


@pytest.mark.parametrize("name", ["protonet", "frn", "bifrn", "hmdrn"])
def test_training_step_updates_every_trainable_tensor(name: str) -> None:
    torch.manual_seed(7)
    model = build_model(name, image_size=32)
    s, y, q, qy = episode(size=32)
    loss, logits = model.episode_loss(s, y, q, qy)
    loss.backward()
    assert logits.shape == (6, 3) and torch.isfinite(loss)
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def test_details_for_visualisation() -> None:
    model = build_model("hmdrn").eval()
    s, y, q, _ = episode()
    with torch.no_grad():
        logits, details = model(s, y, q, return_details=True)
    assert details["levels"] == ["last", "mid"]
    assert details["masks"]["mid"].shape == (6, 3, 2, 100)
    assert details["reconstruction"]["last"].shape == (6, 3, 25, 64)
    assert details["token_error"]["mid"].shape == (6, 3, 100)
    assert set(details["fusion_weights"]) == {"w_last", "w_mid", "gamma"}
    fused = details["level_scores"]["last"] + details["level_scores"]["mid"]
    assert torch.allclose(fused, logits, atol=1e-5)


def test_ablation_switches() -> None:
    assert count_trainable(build_model("hmdrn", levels="last")) == 113_088 + 75_200 + 12_288 + 2
    fixed = build_model("hmdrn", fusion="fixed")
    assert count_trainable(fixed) == 288_067 - 2 and fixed.fusion_weights()["w_mid"] == 0.5
    ridge = build_model("hmdrn", reconstruction="ridge")
    assert count_trainable(ridge) == 113_088 + 2 * 75_200 + 2 * 2 + 3
    both = build_model("hmdrn", reconstruction="bidirectional")
    assert set(both.fusion_weights()) == {"w_last", "w_last_support", "w_mid", "w_mid_support", "gamma"}
    deeper = build_model("hmdrn", levels="last", transformer_layers=2, transformer_heads=4, mask=False)
    assert len(deeper.transformers["last"].layers) == 2 and not deeper.query_embedding_differs


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(name="hmdrm"), "unknown model 'hmdrm' (did you mean 'hmdrn'?)"),
        (dict(name="hmdrn", mask="false"), "option mask='false' (str), expected True or False"),
        (
            dict(name="hmdrn", transformer_layers="3"),
            "option transformer_layers='3' (str), expected an integer",
        ),
        (
            dict(name="hmdrn", levels=["last", 2]),
            "option levels=['last', 2] (list), expected a string or a list",
        ),
        (dict(name="gsfl", num_classes=5.0), "option num_classes=5.0 (float), expected an integer or None"),
        (dict(name="protonet", image_size="84"), "option image_size='84' (str), expected an integer"),
        (dict(name="hmdrn", backbone="vgg"), "unknown backbone 'vgg'"),
        (dict(name="hmdrn", masks=True), "unknown option(s) ['masks']"),
        (dict(name="hmdrn", levels="mid"), "last level is always used"),
        (dict(name="hmdrn", reconstruction="linear"), "reconstruction='linear'"),
        (dict(name="hmdrn", transformer_heads=3), "must divide the channel count 64"),
        (dict(name="hmdrn", transformer_layers=0), "mask=True needs a transformer"),
        (
            dict(name="hmdrn", attention_dropout=1.0),
            "attention_dropout=1.0; expected a probability in [0, 1)",
        ),
    ],
)
def test_bad_options_name_the_problem(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        build_model(**kwargs)
    assert message in str(error.value)


def test_options_of_their_declared_types_are_taken() -> None:
    """An integer is a number, a tuple a list, None where the option may be None, NumPy scalars numbers and
    booleans, an array or a tensor a list: the models build."""
    assert build_model("hmdrn", fusion_init=1, levels=("last", "mid"), mask=False).config["fusion_init"] == 1
    protonet = build_model("protonet", scale_init=None, learn_scale=True, image_size=32)
    assert protonet.config["image_size"] == 32
    check_model_options("gsfl", {"num_classes": None, "class_groups": [0, 1], "dropout": 0})
    check_model_options("gsfl", {"num_classes": np.int64(4), "class_groups": np.array([0, 1, 1, 0])})
    check_model_options("hmdrn", {"mask": np.bool_(False), "attention_dropout": np.float32(0.1)})
    check_model_options("gsfl", {"class_groups": torch.tensor([0, 1])})
    with pytest.raises(
        ValueError, match=r"option gsfl\.mean_reduction='false' \(str\), expected True or False"
    ):
        check_model_options("hmdrn", {"gsfl": {"mean_reduction": "false", "num_classes": 4}})


def test_a_recorded_config_rebuilds_as_it_trained_whatever_its_types() -> None:
    """A checkpoint recorded before option types were checked (mask="false", which read as true) still loads:
    the same model, the mask on; a new model with that option is refused."""
    model = build_model("hmdrn", image_size=32)
    recorded = {**model.config, "mask": "false"}
    rebuilt = load_model({"config": recorded, "state_dict": model.state_dict()})
    assert (
        rebuilt.config["mask"] == "false" and rebuilt.query_embedding_differs == model.query_embedding_differs
    )
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), model.state_dict().values()))
    with pytest.raises(ValueError, match="option mask='false'"):
        build_model("hmdrn", image_size=32, mask="false")


def test_own_checkpoint_round_trip(tmp_path: Path) -> None:
    model = build_model("hmdrn", levels="last", image_size=32)
    with torch.no_grad():
        model.gamma.fill_(3.0)
    path = save_model(model, tmp_path / "m.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["config"]["levels"] == "last" and raw["config"]["image_size"] == 32
    loaded = load_model(path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    assert load_reference_checkpoint(path).fusion_weights()["gamma"] == 3.0
    other = build_model("bifrn", image_size=32)
    with pytest.raises(ValueError, match=r"missing tensors [^;]* and \d+ more; .*another model or backbone"):
        load_reference_checkpoint({k: v for k, v in other.state_dict().items()})


def test_a_checkpoint_holding_nan_is_refused_naming_the_file_and_tensors(tmp_path: Path) -> None:
    model = build_model("protonet", image_size=32)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    state["backbone.blocks.0.0.weight"].view(-1)[3] = float("nan")
    state["scale"].fill_(float("inf"))
    path = tmp_path / "poisoned.pt"
    torch.save({"config": dict(model.config), "state_dict": state}, path)  # as another tool might write it
    with pytest.raises(
        ValueError,
        match=rf"checkpoint {path} holds NaN or infinite values in 2 tensor\(s\) \(scale, backbone.blocks.0.0.weight\)",
    ):
        load_model(path)
    with pytest.raises(ValueError, match="holds NaN or infinite values"):
        load_reference_checkpoint(path)
    released = reference_state()
    table = next(name for name in released if name.startswith("fsrm1") and name.endswith("positional_emb"))
    released[table] = torch.full_like(released[table], float("nan"))  # a table that is checked, not loaded
    with pytest.raises(ValueError, match=rf"reference checkpoint holds NaN .* \({table}\)"):
        load_reference_checkpoint({f"module.{k}": v for k, v in released.items()})


def reference_state(seed: int = 0) -> dict[str, torch.Tensor]:
    shapes = json.loads(REFERENCE.read_text())["state_dict"]
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in shapes.items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(17)
        elif name.endswith("positional_emb"):
            state[name] = sinusoidal_positions(shape[1], shape[2])
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=g) + 0.5
        else:
            state[name] = torch.randn(shape, generator=g)
    return state


def test_reference_checkpoint_values_land_where_they_belong(tmp_path: Path) -> None:
    state = reference_state()
    torch.save(state, tmp_path / "authors.pth")
    model = load_reference_checkpoint(tmp_path / "authors.pth")
    ours = model.state_dict()
    pairs = {
        "scale": "gamma",
        "w1": "fusion.last",
        "w2": "fusion.mid",
        "feature_extractor.conv1.layers.0.weight": "backbone.blocks.0.0.weight",
        "feature_extractor.conv4.layers.1.running_var": "backbone.blocks.3.1.running_var",
        "feature_extractor.conv2.layers.1.num_batches_tracked": "backbone.blocks.1.1.num_batches_tracked",
        "fsrm1.transformer.blocks.0.self_attn.qkv.weight": "transformers.last.layers.0.attn.qkv.weight",
        "fsrm2.transformer.blocks.2.self_attn.proj.bias": "transformers.mid.layers.2.attn.proj.bias",
        "fsrm1.transformer.blocks.1.pre_norm.weight": "transformers.last.layers.1.norm_pre.weight",
        "fsrm2.transformer.blocks.1.norm1.bias": "transformers.mid.layers.1.norm_post.bias",
        "fsrm1.transformer.blocks.2.linear1.weight": "transformers.last.layers.2.ffn_in.weight",
        "fsrm2.transformer.blocks.0.linear2.bias": "transformers.mid.layers.0.ffn_out.bias",
        "fsrm1.transformer.norm.weight": "transformers.last.norm_final.weight",
        "hhdcm1.to_qkv.0.weight": "reconstructions.last.qkv.weight",
        "hhdcm2.to_qkv.0.weight": "reconstructions.mid.qkv.weight",
    }
    for theirs, mine in pairs.items():
        assert torch.equal(state[theirs], ours[mine]), theirs
    # every loaded tensor is a distinct reference tensor (nothing left at its initial value)
    loaded = {k: v for k, v in ours.items()}
    assert len(loaded) == len(state) - 2  # the two positional tables are buffers outside the state dict
    # also accepted: a wrapped dict with DataParallel prefixes
    wrapped = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    again = load_reference_checkpoint(wrapped).state_dict()
    assert all(torch.equal(again[k], v) for k, v in ours.items())


def test_reference_checkpoint_errors_name_the_tensors() -> None:
    state = reference_state()
    del state["w2"]
    state["hhdcm1.to_qkv.0.weight"] = torch.randn(191, 64)
    with pytest.raises(ValueError) as error:
        load_reference_checkpoint(state)
    assert "fusion.mid" in str(error.value) and "reconstructions.last.qkv.weight" in str(error.value)


# -- golden logits -------------------------------------------------------------------------------------------
def test_golden_file_matches_the_cases_and_covers_every_model() -> None:
    assert list(GOLDEN["cases"]) == list(golden.CASES), "cases changed: rerun tests/data/make_golden.py"
    for case_id, case in golden.CASES.items():
        assert GOLDEN["cases"][case_id]["case"] == golden.spec(case), case_id
    covered = {(case["name"], case["backbone"]) for case in golden.CASES.values()}
    assert covered == set(itertools.product(MODEL_NAMES, BACKBONES))
    hmdrn_options = [case["options"] for case in golden.CASES.values() if case["name"] == "hmdrn"]
    for switch in (dict(levels="last"), dict(mask=False), dict(reconstruction="ridge"), dict(fusion="fixed")):
        assert any(switch.items() <= options.items() for options in hmdrn_options), switch
    assert any("gsfl" in options for options in hmdrn_options)
    for case_id, entry in GOLDEN["cases"].items():
        # every logit differs from every other: no case is degenerate (constant or tied scores)
        assert len(set(entry["hex"])) == len(entry["hex"]), case_id


@pytest.mark.parametrize("case_id", list(golden.CASES))
def test_logits_equal_the_golden_values(case_id: str, one_thread: None) -> None:
    logits = golden.case_logits(golden.CASES[case_id])
    expected = golden.decode(GOLDEN["cases"][case_id])
    torch.testing.assert_close(logits, expected, rtol=golden.RTOL, atol=golden.ATOL)
