"""Few-shot evaluation: confidence interval, cached and plain paths, checkpoints and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fsl_core.data import EpisodeSampler, FewShotFolder
from fsl_core.engine import EvalResult, confidence_interval, evaluate, evaluate_checkpoint
from fsl_core.evaluate import main
from fsl_core.models import build_model, save_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def test_set(birds: Path) -> FewShotFolder:
    return FewShotFolder(birds, "test", transform="eval", image_size=16)


def test_confidence_interval_formula() -> None:
    values = np.array([40.0, 60.0, 80.0, 100.0])
    mean, ci95 = confidence_interval(values)
    assert mean == 70.0
    # population standard deviation (ddof=0), as FRN and BiFRN: sqrt(500) = 22.36...
    assert ci95 == pytest.approx(1.96 * math.sqrt(500.0) / 2.0)
    assert confidence_interval([50.0]) == (50.0, 0.0)
    with pytest.raises(ValueError, match="no accuracies"):
        confidence_interval([])


def test_eval_result_text() -> None:
    result = EvalResult(
        mean=78.123, ci95=0.2049, accuracies=np.zeros(3), way=5, shot=1, query=16, episodes=3, seed=0
    )
    assert str(result) == "78.12 ± 0.20"
    assert result.to_dict()["episodes"] == 3 and "accuracies" not in result.to_dict()


@pytest.mark.parametrize("name", ["hmdrn", "bifrn", "frn", "protonet"])
def test_cached_and_plain_paths_agree(test_set: FewShotFolder, name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, "conv4", image_size=16)
    kwargs = dict(way=5, shot=2, query=3, episodes=8, seed=7, device="cpu", progress=False)
    cached = evaluate(model, test_set, cached=True, **kwargs)
    plain = evaluate(model, test_set, cached=False, **kwargs)
    assert np.array_equal(cached.accuracies, plain.accuracies)
    assert (cached.mean, cached.ci95) == (plain.mean, plain.ci95)
    assert cached.accuracies.shape == (8,)
    # accuracies are percentages of 15 queries
    assert np.allclose(cached.accuracies * 15 / 100, np.round(cached.accuracies * 15 / 100))
    mean, ci95 = confidence_interval(cached.accuracies)
    assert (cached.mean, cached.ci95) == (mean, ci95)


def test_episodes_are_those_of_the_sampler(test_set: FewShotFolder, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plain path sees exactly EpisodeSampler(seed)'s episodes; another seed gives other episodes."""
    torch.manual_seed(0)
    model = build_model("protonet", "conv4", image_size=16).eval()
    seen: list[torch.Tensor] = []
    original = type(model).forward

    def recording(self, support_images, support_labels, query_images, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen.append(support_images.clone())
        return original(self, support_images, support_labels, query_images, **kwargs)

    monkeypatch.setattr(type(model), "forward", recording)
    evaluate(model, test_set, way=3, shot=1, query=2, episodes=4, seed=5, cached=False, progress=False)
    expected = [list(indices) for indices in EpisodeSampler(test_set, 3, 1, 2, 4, seed=5)]
    for support, indices in zip(seen, expected):
        assert torch.equal(support, torch.stack([test_set[i][0] for i in indices[:3]]))
    a = evaluate(model, test_set, way=5, shot=1, query=3, episodes=20, seed=1, progress=False)
    b = evaluate(model, test_set, way=5, shot=1, query=3, episodes=20, seed=1, progress=False)
    c = evaluate(model, test_set, way=5, shot=1, query=3, episodes=20, seed=2, progress=False)
    assert np.array_equal(a.accuracies, b.accuracies) and not np.array_equal(a.accuracies, c.accuracies)


def test_query_role_is_embedded_only_when_it_differs(
    test_set: FewShotFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    model = build_model("bifrn", "conv4", image_size=16)
    calls: list[tuple[str, bool | None]] = []
    extract, encode = type(model).extract, type(model).encode

    def counting_extract(self, images):  # noqa: ANN001, ANN202
        calls.append(("extract", None))
        return extract(self, images)

    def counting_encode(self, maps, query):  # noqa: ANN001, ANN202
        calls.append(("encode", query))
        return encode(self, maps, query)

    monkeypatch.setattr(type(model), "extract", counting_extract)
    monkeypatch.setattr(type(model), "encode", counting_encode)
    model.query_embedding_differs = False
    evaluate(model, test_set, way=5, shot=1, query=2, episodes=3, batch_size=1000, progress=False)
    assert calls == [("extract", None), ("encode", False)]
    calls.clear()
    # both roles from one backbone pass
    model.query_embedding_differs = True
    evaluate(model, test_set, way=5, shot=1, query=2, episodes=3, batch_size=1000, progress=False)
    assert calls == [("extract", None), ("encode", False), ("encode", True)]


def test_mode_and_errors(test_set: FewShotFolder) -> None:
    model = build_model("protonet", "conv4", image_size=16).train()
    evaluate(model, test_set, way=3, shot=1, query=1, episodes=2, progress=False)
    assert model.training  # put back in its previous mode
    with pytest.raises(ValueError, match="way=11 but .* has only 10 classes"):
        evaluate(model, test_set, way=11, shot=1, query=1, episodes=2, progress=False)
    with pytest.raises(ValueError, match=r"shot\+query=5\+16=21 images per class are needed"):
        evaluate(model, test_set, way=5, shot=5, query=16, episodes=2, progress=False)
    with pytest.raises(ValueError, match="episodes must be a positive integer"):
        evaluate(model, test_set, episodes=0, progress=False)


def test_evaluate_checkpoint_and_cli(birds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    model = build_model("hmdrn", "conv4", image_size=16)
    checkpoint = save_model(model, tmp_path / "best.pt", train_config={"image_size": 16})
    results = evaluate_checkpoint(checkpoint, birds, shots=(1, 2), query=3, episodes=6, progress=False)
    assert sorted(results) == [1, 2] and results[2].shot == 2 and results[1].episodes == 6
    direct = evaluate(
        model, FewShotFolder(birds, "test", image_size=16), shot=1, query=3, episodes=6, progress=False
    )
    assert np.array_equal(direct.accuracies, results[1].accuracies)

    code = main(
        [
            str(checkpoint),
            "--data",
            str(birds),
            "--shot",
            "1",
            "2",
            "--episodes",
            "6",
            "--query",
            "3",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and f"{results[1]}" in out and f"{results[2]}" in out
    written = json.loads((tmp_path / "best_test_eval.json").read_text())
    assert (
        written["results"]["1"]["mean"] == results[1].mean
        and written["results"]["2"]["ci95"] == results[2].ci95
    )
    assert written["split"] == "test" and written["device"] == "cpu"

    code = main([str(tmp_path / "missing.pt"), "--data", str(birds), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and err == f"error: checkpoint {tmp_path / 'missing.pt'} does not exist\n"
    not_ours = tmp_path / "weights.pt"
    torch.save({"w1": torch.zeros(1)}, not_ours)
    code = main([str(not_ours), "--data", str(birds), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "--reference" in err and err.count("\n") == 1
