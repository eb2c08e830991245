"""Few-shot evaluation: confidence interval, cached and plain paths, checkpoints and the CLI."""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import fsl_core.cli.evaluate as evaluate_cli
from fsl_core.cli.evaluate import format_table, main
from fsl_core.data import EpisodeSampler, FewShotFolder
from fsl_core.engine import (
    EvalResult,
    confidence_interval,
    evaluate,
    evaluate_checkpoint,
    evaluate_shots,
    results_to_dict,
)
from fsl_core.engine.evaluate import (
    check_result_path,
    checkpoint_record,
    earlier_result,
    evaluation_data_root,
    model_label,
    result_file_name,
    write_results,
)
from fsl_core.models import build_model, save_model
from fsl_core.models.checkpoints import load_trained_model
from fsl_core.statistics import wilson_interval
from fsl_core.viz.tables import accuracy_table, results_table

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


def test_wilson_interval_values() -> None:
    # half of 100: centre 0.5, half-width 1.96·sqrt(0.25/100 + 1.96²/40000)/(1 + 1.96²/100) = 0.09617
    low, high = wilson_interval(50.0, 100)
    assert (low, high) == pytest.approx((40.383, 59.617), abs=1e-3)
    low, high = wilson_interval(0.0, 10)  # no hit in 10: the interval keeps a width, and starts at 0
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(27.754, abs=1e-3)
    assert wilson_interval(100.0, 10) == pytest.approx((100.0 - high, 100.0))
    for n in range(1, 2001):  # rounding never leaves a rate of 0 % or 100 % outside its own interval
        assert wilson_interval(0.0, n)[0] == 0.0 and wilson_interval(100.0, n)[1] == 100.0
    with pytest.raises(ValueError, match="at least one trial, got n=0"):
        wilson_interval(50.0, 0)


def test_a_progress_line_tells_the_models_apart() -> None:
    assert model_label(build_model("protonet", "conv4")) == "protonet"
    assert model_label(build_model("hmdrn", "conv4", gsfl={"num_classes": 10})) == "hmdrn + gsfl"
    gsfl = build_model("gsfl", "conv4", num_classes=10)
    labels = []
    for feature in ("d", "sd", "raw"):
        gsfl.set_feature(feature)
        labels.append(model_label(gsfl))
    assert labels == ["gsfl (d features)", "gsfl (s+d features)", "gsfl (raw features)"]
    assert model_label(torch.nn.Linear(2, 2)) == ""


def test_eval_result_text() -> None:
    result = EvalResult(
        mean=78.123, ci95=0.2049, accuracies=np.zeros(3), way=5, shot=1, query=16, episodes=3, seed=0
    )
    assert str(result) == "78.12 ± 0.20"
    assert result.to_dict()["episodes"] == 3 and "accuracies" not in result.to_dict()
    assert result.episodes_per_second is None and result.to_dict()["episodes_per_second"] is None
    timed = EvalResult(
        mean=50.0,
        ci95=1.0,
        accuracies=np.zeros(400),
        way=5,
        shot=1,
        query=16,
        episodes=400,
        seed=0,
        seconds=12.0,
        embed_seconds=9.5,
        episode_seconds=2.0,
    )
    assert {k: v for k, v in timed.to_dict().items() if "second" in k} == {
        "seconds": 12.0,
        "embed_seconds": 9.5,
        "episode_seconds": 2.0,
        "episodes_per_second": 200.0,
    }
    assert format_table({1: timed.to_dict(), 5: result.to_dict()}).splitlines() == [
        "shot     accuracy (%)   embed s  episodes s  episodes/s",
        "   1     50.00 ± 1.00       9.5         2.0       200.0",
        "   5     78.12 ± 0.20       0.0         0.0           -",
    ]


def test_embedding_and_episodes_are_timed_apart(
    test_set: FewShotFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sleeps of known length in the embedding and in every episode head land in their own time."""
    evaluation = importlib.import_module("fsl_core.engine.evaluate")  # the module, not the function
    real_embed = evaluation.embed_roles

    def slow_embed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        time.sleep(0.3)
        return real_embed(*args, **kwargs)

    torch.manual_seed(0)
    model = build_model("protonet", "conv4", image_size=16)
    real_head = model.head

    def slow_head(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        time.sleep(0.02)
        return real_head(*args, **kwargs)

    monkeypatch.setattr(evaluation, "embed_roles", slow_embed)
    monkeypatch.setattr(model, "head", slow_head, raising=False)
    kwargs = dict(way=5, shot=1, query=3, episodes=8, seed=0, device="cpu", progress=False)
    cached = evaluate(model, test_set, **kwargs)
    assert cached.embed_seconds >= 0.3 and 8 * 0.02 <= cached.episode_seconds < cached.embed_seconds
    assert cached.seconds >= cached.embed_seconds + cached.episode_seconds
    assert cached.episodes_per_second == 8 / cached.episode_seconds
    plain = evaluate(model, test_set, cached=False, **kwargs)  # each episode embeds its own images
    assert plain.embed_seconds == 0.0 and 0 < plain.episode_seconds <= plain.seconds
    assert np.array_equal(plain.accuracies, cached.accuracies)


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


def test_several_shots_at_once_give_each_shot_s_result(test_set: FewShotFolder, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("protonet", "conv4", image_size=16)
    settings = dict(way=3, query=2, episodes=5, seed=4, progress=False)
    results = evaluate_shots(model, test_set, (2, 1), **settings)
    assert list(results) == [2, 1]
    for shot, result in results.items():
        alone = evaluate(model, test_set, shot=shot, **settings)
        assert np.array_equal(result.accuracies, alone.accuracies) and (result.mean, result.ci95) == (
            alone.mean,
            alone.ci95,
        )
    as_json = results_to_dict(results)
    assert list(as_json) == ["2", "1"] and as_json["1"] == results[1].to_dict()
    assert json.loads(json.dumps(as_json)) == as_json
    table = results_table({"a": results, "b": {1: results[1]}})
    assert table.to_dict("records") == [
        {"model": "a", "shot": 2, "mean": results[2].mean, "ci95": results[2].ci95, "episodes": 5},
        {"model": "a", "shot": 1, "mean": results[1].mean, "ci95": results[1].ci95, "episodes": 5},
        {"model": "b", "shot": 1, "mean": results[1].mean, "ci95": results[1].ci95, "episodes": 5},
    ]
    assert list(results_table({}, label="feature").columns) == ["feature", "shot", "mean", "ci95", "episodes"]
    wide = accuracy_table(table, way=3, order=["b", "a"])
    assert list(wide.index) == ["b", "a"] and list(wide.columns) == ["3-way 1-shot", "3-way 2-shot"]
    assert wide.loc["a", "3-way 2-shot"] == f"{results[2].mean:.2f} ± {results[2].ci95:.2f}"
    assert pd.isna(wide.loc["b", "3-way 2-shot"])
    header, names = str(wide).splitlines()[:2]  # the shot headers, then the index's name alone on its line
    assert header.split() == ["3-way", "1-shot", "3-way", "2-shot"] and names.split() == ["model"]


def test_mode_and_errors(test_set: FewShotFolder) -> None:
    model = build_model("protonet", "conv4", image_size=16).train()
    evaluate(model, test_set, way=3, shot=1, query=1, episodes=2, progress=False)
    assert model.training  # put back in its previous mode
    with pytest.raises(ValueError, match="^evaluation: way=11: .* has only 10 classes; use way <= 10$"):
        evaluate(model, test_set, way=11, shot=1, query=1, episodes=2, progress=False)
    with pytest.raises(
        ValueError,
        match=r"shot 5 \+ query 16 = 21 images per class, but all 10 classes of .*/test have fewer \(12 each\); "
        r"lower shot or query so that shot \+ query <= 12$",
    ):
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
    written = json.loads((tmp_path / "best_test_5way_1+2shot_3query_6ep_seed0.json").read_text())
    assert (
        written["results"]["1"]["mean"] == results[1].mean
        and written["results"]["2"]["ci95"] == results[2].ci95
    )
    assert written["split"] == "test" and written["device"] == "cpu"
    timing = written["results"]["1"]
    assert timing["embed_seconds"] > 0 and timing["episode_seconds"] > 0
    assert timing["episodes_per_second"] == 6 / timing["episode_seconds"]
    assert "embed s  episodes s  episodes/s" in out
    elsewhere = tmp_path / "results" / "hmdrn" / "r.json"  # folders that do not exist are made, and named
    assert (
        main(
            [
                str(checkpoint),
                "--data",
                str(birds),
                "--shot",
                "1",
                "--episodes",
                "2",
                "--query",
                "3",
                "--no-progress",
                "--out",
                str(elsewhere),
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.endswith(
        f"written: {elsewhere} (the folder {tmp_path / 'results'} was made)\n"
    )

    code = main([str(tmp_path / "missing.pt"), "--data", str(birds), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith(f"error: checkpoint {tmp_path / 'missing.pt'} does not exist; ")
    code = main([str(tmp_path), "--data", str(birds), "--no-progress"])  # a run folder, not its checkpoint
    err = capsys.readouterr().err
    assert code == 1 and err == (
        f"error: checkpoint {tmp_path} is a folder; give a checkpoint file: {tmp_path / 'best.pt'} is one\n"
    )
    notebook_run = tmp_path / "02_train-run"  # a notebook's run folder: its training run is in train/
    shutil.copytree(tmp_path, notebook_run / "train", ignore=shutil.ignore_patterns("02_train-run"))
    code = main([str(notebook_run), "--data", str(birds), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and err.endswith(
        f"give a checkpoint file: {notebook_run / 'train' / 'best.pt'} is one\n"
    )
    not_ours = tmp_path / "weights.pt"
    torch.save({"w1": torch.zeros(1)}, not_ours)
    code = main([str(not_ours), "--data", str(birds), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "--reference" in err and err.count("\n") == 1


def test_data_defaults_to_the_set_the_run_trained_on(
    birds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    model = build_model("protonet", "conv4", image_size=16)
    config = {"image_size": 16, "data_root": str(birds)}
    checkpoint = save_model(model, tmp_path / "best.pt", train_config=config)
    assert evaluation_data_root(checkpoint) == birds
    assert evaluation_data_root(checkpoint, tmp_path) == tmp_path
    given = evaluate_checkpoint(checkpoint, birds, shots=(1,), query=3, episodes=4, progress=False)
    recorded = evaluate_checkpoint(checkpoint, shots=(1,), query=3, episodes=4, progress=False)
    assert np.array_equal(given[1].accuracies, recorded[1].accuracies)
    code = main([str(checkpoint), "--shot", "1", "--episodes", "4", "--query", "3", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith(f"{checkpoint} on {birds}/test at 16 px: ")
    written = json.loads((tmp_path / "best_test_5way_1shot_3query_4ep_seed0.json").read_text())
    assert written["data"] == str(birds) and written["results"]["1"]["mean"] == given[1].mean

    # a relative root is relative to where training started: elsewhere it is refused with the way out
    relative = save_model(model, tmp_path / "relative.pt", train_config={**config, "data_root": "data/birds"})
    monkeypatch.chdir(tmp_path)
    code = main([str(relative), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and err == (
        f"error: {relative} was trained on data/birds, which is not a folder here (a relative path is relative "
        f"to the folder training started in, and this is {tmp_path}); give the data set root holding the split "
        "folder (--data ROOT)\n"
    )
    unrecorded = save_model(model, tmp_path / "saved.pt")
    with pytest.raises(
        ValueError,
        match=r"saved.pt records no data set \(a model saved outside training\); .* \(data_root=ROOT\)$",
    ):
        evaluate_checkpoint(unrecorded, episodes=2, progress=False)
    released = tmp_path / "released.pth"  # the authors' weights: a bare state dict, no data set recorded
    torch.save({"feature_extractor.layer1.0.weight": torch.zeros(1)}, released)
    with pytest.raises(ValueError, match="released weights .* record no data set; give the data set root"):
        evaluation_data_root(released, reference=True)
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist; .* holds best.pt"):
        evaluation_data_root(tmp_path / "missing.pt")


# -- output files: named after the settings, checked first, never overwritten -------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny HMDRN checkpoint (16×16 inputs), shared read-only: copy it before writing beside it."""
    torch.manual_seed(0)
    model = build_model("hmdrn", "conv4", image_size=16)
    return save_model(model, tmp_path_factory.mktemp("trained") / "best.pt", train_config={"image_size": 16})


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_checkpoint(trained: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(trained, folder / "best.pt"))


def quick(checkpoint: Path, data: Path, *extra: str) -> list[str]:
    return [str(checkpoint), "--data", str(data), "--episodes", "4", "--query", "3", "--no-progress", *extra]


def never_called(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    raise AssertionError("evaluate_checkpoint ran although the command should have stopped before it")


def test_a_result_names_its_checkpoint_and_a_stale_one_is_told_apart(
    trained: Path, birds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = copy_checkpoint(trained, tmp_path / "run")
    content = torch.load(checkpoint, weights_only=True)
    torch.save({**content, "epoch": 2}, checkpoint)
    assert main(quick(checkpoint, birds, "--shot", "1")) == 0
    result = checkpoint.with_name("best_test_5way_1shot_3query_4ep_seed0.json")
    written = json.loads(result.read_text())
    assert (written["checkpoint"], written["checkpoint_sha256"]) == (str(checkpoint), sha256(checkpoint))
    assert (written["checkpoint_epoch"], written["trained_image_size"], written["image_size"]) == (2, 16, 16)
    assert written["results"]["1"]["image_size"] == 16 and written["data"] == str(birds)
    first = capsys.readouterr().out
    before = sha256(result)

    # the same evaluation again: the stored result is shown as it was printed, and nothing runs
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluate_cli, "evaluate_checkpoint", never_called)
        assert main(quick(checkpoint, birds, "--shot", "1")) == 0
    again = capsys.readouterr().out.splitlines()
    assert again[0] == (
        f"{checkpoint} on {birds}/test at 16 px: 5-way, 3 queries per class, 4 episodes: measured before, with the "
        f"same checkpoint file, images and settings, in {result} (--overwrite measures again)"
    )
    table = first.splitlines()[1:3]
    assert again[1:] == table and table[1].split()[1:4] == [
        f"{written['results']['1']['mean']:.2f}",
        "±",
        f"{written['results']['1']['ci95']:.2f}",
    ]
    assert sha256(result) == before
    # anything else measured there is kept, and the refusal says how it was measured
    for flags, but in (
        (["--seed", "1"], "with seed 0"),
        (["--image-size", "24"], "at 16 px"),
        (["--plain", "--episodes", "5"], "on the cached path and with 4 episodes"),
        (["--split", "val", "--shot", "1", "2"], "on the test split and with shots 1"),
    ):
        assert main(quick(checkpoint, birds, "--shot", "1", *flags, "--out", str(result))) == 1, flags
        err = capsys.readouterr().err
        assert err.startswith(
            f"error: result file {result} already exists (measured on this same checkpoint, but {but}) and is kept"
        ), err
    # the same folder holding other images: measured again, never shown as this
    changed = Path(shutil.copytree(birds, tmp_path / "birds"))
    extra = sorted((changed / "test").iterdir())[0]
    shutil.copy(next(extra.iterdir()), extra / "added.png")
    (tmp_path / "moved.json").write_text(result.read_text().replace(str(birds), str(changed)))
    assert main(quick(checkpoint, changed, "--shot", "1", "--out", str(tmp_path / "moved.json"))) == 1
    assert (
        "(measured on this same checkpoint, but on other image files) and is kept" in capsys.readouterr().err
    )
    older = json.loads(result.read_text())  # a file of an older version: no file list, no size
    del older["data_files_sha256"]
    (tmp_path / "older.json").write_text(json.dumps({**older, "image_size": None}))
    assert main(quick(checkpoint, birds, "--shot", "1", "--out", str(tmp_path / "older.json"))) == 1
    assert "(measured on this same checkpoint, but with no record of its image files) and is kept" in (
        capsys.readouterr().err
    )
    torch.save({**content, "epoch": 3}, checkpoint)  # the run trained further: best.pt changed
    assert main(quick(checkpoint, birds, "--shot", "1")) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: result file {result} already exists (measured on another version of this checkpoint: epoch 2 "
        "then, epoch 3 now) and is kept as it is; choose another --out, or pass --overwrite"
    )
    other = copy_checkpoint(trained, tmp_path / "other")
    assert main(quick(other, birds, "--shot", "1", "--out", str(result))) == 1
    assert f"(measured on another checkpoint, {checkpoint}) and is kept" in capsys.readouterr().err
    before = sha256(result)
    assert (
        main(
            quick(checkpoint, birds, "--shot", "1", "--image-size", "24", "--out", str(tmp_path / "24.json"))
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "at 24 px: " in out and "note: the model was trained at 16 px and is evaluated at 24 px" in out
    assert json.loads((tmp_path / "24.json").read_text())["image_size"] == 24 and sha256(result) == before
    assert earlier_result(tmp_path / "nothing.json", checkpoint_record(checkpoint)) is None


def test_a_checkpoint_that_changes_while_it_is_evaluated_gives_no_result(
    trained: Path,
    birds: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    checkpoint = copy_checkpoint(trained, tmp_path / "run")
    real = evaluate_cli.evaluate_checkpoint

    def a_run_writes_best_pt_meanwhile(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        results = real(*args, **kwargs)
        content = torch.load(checkpoint, weights_only=True)
        torch.save({**content, "epoch": 9}, checkpoint)
        return results

    monkeypatch.setattr(evaluate_cli, "evaluate_checkpoint", a_run_writes_best_pt_meanwhile)
    assert main(quick(checkpoint, birds, "--shot", "1")) == 1
    out, err = capsys.readouterr()
    assert "5-way" in out  # the table was shown
    assert err == (
        f"error: {checkpoint} changed or was removed while it was evaluated (a run still training?), so the results above "
        "cannot "
        "say which version they measured and were not saved; evaluate it again once it is final\n"
    )
    assert [path.name for path in checkpoint.parent.iterdir()] == ["best.pt"]


def test_result_file_name_says_what_was_evaluated() -> None:
    assert result_file_name("runs/a/best.pt", "test", 5, [1], 16, 10000, 0) == (
        "best_test_5way_1shot_16query_10000ep_seed0.json"
    )
    assert result_file_name(Path("CUB_conv4.pth"), "val", 10, [5, 1], 15, 600, 3, plain=True) == (
        "CUB_conv4_val_10way_1+5shot_15query_600ep_seed3_plain.json"
    )
    names = {
        result_file_name("best.pt", "test", 5, shots, 16, 1000, seed)
        for shots in ([1], [5], [1, 5])
        for seed in (0, 1)
    }
    assert len(names) == 6  # each setting its own file


def test_cli_second_shot_keeps_the_first_result(
    birds: Path, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = copy_checkpoint(trained, tmp_path)
    assert main(quick(checkpoint, birds, "--shot", "1")) == 0
    one = tmp_path / "best_test_5way_1shot_3query_4ep_seed0.json"
    assert f"written: {one}" in capsys.readouterr().out
    before = sha256(one)
    assert main(quick(checkpoint, birds, "--shot", "5")) == 0
    five = tmp_path / "best_test_5way_5shot_3query_4ep_seed0.json"
    assert sha256(one) == before
    assert sorted(json.loads(one.read_text())["results"]) == ["1"]
    assert sorted(json.loads(five.read_text())["results"]) == ["5"]
    assert json.loads(five.read_text())["results"]["5"]["shot"] == 5


def test_cli_refuses_a_folder_or_unwritable_out_before_any_episode(
    birds: Path,
    trained: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checkpoint = copy_checkpoint(trained, tmp_path / "run")
    monkeypatch.setattr(evaluate_cli, "evaluate_checkpoint", never_called)
    results = tmp_path / "results"
    results.mkdir()
    (results / "other.json").write_text("{}")
    listing = sorted(p.name for p in results.iterdir())

    assert main(quick(checkpoint, birds, "--out", str(results))) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert f"{results} is a folder" in captured.err
    assert str(results / "best_test_5way_1+5shot_3query_4ep_seed0.json") in captured.err
    assert sorted(p.name for p in results.iterdir()) == listing

    # a folder that cannot be created: a file stands where it would be
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    assert main(quick(checkpoint, birds, "--out", str(blocker / "sub" / "r.json"))) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and f"{blocker} is a file" in captured.err and "another --out" in captured.err
    assert blocker.read_text() == "x"

    # a folder without write permission (os.access), and one where the test write fails
    with monkeypatch.context() as patch:
        patch.setattr(os, "access", lambda *args, **kwargs: False)
        assert main(quick(checkpoint, birds, "--out", str(results / "new.json"))) == 1
        assert "no permission to write in" in capsys.readouterr().err

    def read_only(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError(errno.EROFS, "Read-only file system")

    with monkeypatch.context() as patch:
        patch.setattr(tempfile, "mkstemp", read_only)
        assert main(quick(checkpoint, birds, "--out", str(results / "deeper" / "new.json"))) == 1
        captured = capsys.readouterr()
    assert captured.out == "" and "Read-only file system" in captured.err and str(results) in captured.err
    assert sorted(p.name for p in results.iterdir()) == listing  # the test file was removed, nothing made


def test_cli_never_overwrites_an_existing_result(
    birds: Path,
    trained: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checkpoint = copy_checkpoint(trained, tmp_path)
    out = tmp_path / "result.json"
    out.write_text('{"old": true}\n')
    old_hash = sha256(out)
    with monkeypatch.context() as patch:
        patch.setattr(evaluate_cli, "evaluate_checkpoint", never_called)
        assert main(quick(checkpoint, birds, "--shot", "1", "--out", str(out))) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert str(out) in captured.err and "another --out" in captured.err and "--overwrite" in captured.err
    assert sha256(out) == old_hash

    assert main(quick(checkpoint, birds, "--shot", "1", "--out", str(out), "--overwrite")) == 0
    stdout = capsys.readouterr().out
    moved = list(tmp_path.glob("result.replaced-*.json"))
    assert len(moved) == 1 and sha256(moved[0]) == old_hash
    assert f"previous result moved to: {moved[0]}" in stdout and f"written: {out}" in stdout
    assert json.loads(out.read_text())["results"]["1"]["episodes"] == 4


def test_cli_shows_the_table_when_the_write_fails(
    birds: Path,
    trained: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checkpoint = copy_checkpoint(trained, tmp_path)
    expected = evaluate_checkpoint(checkpoint, birds, shots=(1, 2), query=3, episodes=4, progress=False)
    out = tmp_path / "out" / "r.json"

    def disk_full(src, dst):  # noqa: ANN001, ANN202
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    assert main(quick(checkpoint, birds, "--shot", "1", "2", "--out", str(out))) == 1
    captured = capsys.readouterr()
    assert str(expected[1]) in captured.out and str(expected[2]) in captured.out
    assert "written:" not in captured.out
    assert f"cannot write {out}" in captured.err and "No space left on device" in captured.err
    assert not out.exists() and list(out.parent.iterdir()) == []  # no partial or temporary file


def test_cli_checks_the_episode_and_model_flags(
    birds: Path,
    trained: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checkpoint = copy_checkpoint(trained, tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(evaluate_cli, "evaluate_checkpoint", never_called)
        assert main(quick(checkpoint, birds, "--way", "1")) == 1
        assert "way=1" in capsys.readouterr().err
        assert main(quick(checkpoint, birds, "--backbone", "resnet12")) == 1
        assert "only used with --reference" in capsys.readouterr().err
    released = tmp_path / "released.pth"  # the authors' weights: a bare state dict
    torch.save({"feature_extractor.layer1.0.weight": torch.zeros(1)}, released)
    for flags, shown in ((["--model", "frn"], "'frn'"), (["--backbone", "resnet12"], "'resnet12'")):
        assert main(quick(released, birds, "--reference", *flags)) == 1
        captured = capsys.readouterr()
        assert captured.out == "" and shown in captured.err
        assert "--model hmdrn --backbone conv4 (the defaults)" in captured.err
        assert main(quick(checkpoint, birds, "--reference", *flags)) == 1  # ours records its model
        assert capsys.readouterr().err == (
            "error: --model and --backbone are only used with --reference on the HMDRN authors' weights; an "
            f"fsl_core checkpoint records its model, and {checkpoint} is one\n"
        )
    assert main(quick(checkpoint, birds, "--way", "11")) == 1  # the test split has 10 classes: named as typed
    assert (
        capsys.readouterr().err
        == f"error: evaluation: --way=11: {birds}/test has only 10 classes; use --way <= 10\n"
    )
    released.unlink()
    assert list(tmp_path.iterdir()) == [checkpoint]  # nothing written
    with pytest.raises(ValueError, match="only used with reference=True"):
        evaluate_checkpoint(checkpoint, birds, model_name="hmdrn", episodes=2, progress=False)

    # what a result cannot honestly state: an interval from one episode, a JSON file named .csv
    with monkeypatch.context() as patch:
        patch.setattr(evaluate_cli, "evaluate_checkpoint", never_called)
        table = tmp_path / "accuracy.csv"
        for flags, message in (
            (["--episodes", "1"], "--episodes=1: one episode gives no confidence interval"),
            (["--seed", "-1"], "--seed must be a non-negative integer, got -1"),
            (
                ["--out", str(table)],
                f"result path {table}: the result is written as JSON, so its name must end in .json; choose "
                f"another --out, e.g. {tmp_path / 'accuracy.json'}",
            ),
        ):
            assert main(quick(checkpoint, birds, *flags)) == 1
            captured = capsys.readouterr()
            assert captured.out == "" and captured.err.startswith(f"error: {message}")
    assert list(tmp_path.iterdir()) == [checkpoint]
    with pytest.raises(ValueError, match="^episodes=1: one episode gives no confidence interval"):
        evaluate_checkpoint(checkpoint, birds, episodes=1, progress=False)
    result = EvalResult(
        mean=50.0, ci95=1.0, accuracies=np.zeros(2), way=5, shot=1, query=3, episodes=2, seed=0
    )
    with pytest.raises(ValueError, match="written as JSON"):
        write_results({1: result}, table)
    assert not table.exists()


def test_reference_flag_on_an_fsl_core_checkpoint_loads_it_as_one(
    birds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    model = build_model("protonet", "conv4", image_size=16)
    checkpoint = save_model(
        model, tmp_path / "best.pt", train_config={"image_size": 16, "data_root": str(birds)}
    )
    assert evaluation_data_root(checkpoint, reference=True) == birds  # its recorded data set
    loaded, size = load_trained_model(checkpoint, reference=True)
    assert size == 16 and loaded.config == model.config
    plain = evaluate_checkpoint(checkpoint, shots=(1,), query=3, episodes=4, progress=False)
    assert (
        main(
            [
                str(checkpoint),
                "--reference",
                "--shot",
                "1",
                "--episodes",
                "4",
                "--query",
                "3",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert (
        f"note: {checkpoint} is an fsl_core checkpoint, which records its model: --reference is not needed"
        in out
    )
    written = json.loads((tmp_path / "best_test_5way_1shot_3query_4ep_seed0.json").read_text())
    assert written["reference"] is False and written["fsl_core_checkpoint"] is True
    assert written["image_size"] == 16 and written["results"]["1"]["mean"] == plain[1].mean


def test_cli_refuses_a_checkpoint_holding_nan_before_any_episode(
    birds: Path, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content = torch.load(trained, weights_only=True)
    content["state_dict"]["gamma"] = torch.full_like(content["state_dict"]["gamma"], float("nan"))
    checkpoint = tmp_path / "nan.pt"
    torch.save(content, checkpoint)  # as a foreign tool might write it: fsl_core never saves NaN
    assert main(quick(checkpoint, birds)) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        f"error: checkpoint {checkpoint} holds NaN or infinite values in 1 tensor(s) (gamma)" in captured.err
    )
    assert list(tmp_path.iterdir()) == [checkpoint]  # no result


def test_evaluate_refuses_one_way_episodes(test_set: FewShotFolder) -> None:
    model = build_model("protonet", "conv4", image_size=16)
    with pytest.raises(ValueError, match=r"way=1: .*always classified correctly.*way >= 2"):
        evaluate(model, test_set, way=1, shot=1, query=2, episodes=2, progress=False)


def test_write_results_never_overwrites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = EvalResult(
        mean=50.0, ci95=1.0, accuracies=np.zeros(2), way=5, shot=1, query=3, episodes=2, seed=0
    )
    path = tmp_path / "r.json"
    write_results({1: result}, path, split="test")
    first = sha256(path)
    with pytest.raises(FileExistsError, match=f"{path} already exists.*overwrite=True"):
        write_results({1: result}, path, split="val")
    assert sha256(path) == first

    # a failed overwrite puts the old file back
    real_replace = os.replace

    def failing_write(src, dst):  # noqa: ANN001, ANN202
        if str(src).endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", failing_write)
        with pytest.raises(OSError, match="No space left"):
            write_results({1: result}, path, overwrite=True, split="val")
    assert sha256(path) == first and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]

    write_results({1: result}, path, overwrite=True, split="val")
    moved = list(tmp_path.glob("r.replaced-*.json"))
    assert len(moved) == 1 and sha256(moved[0]) == first
    assert json.loads(path.read_text())["split"] == "val"
    with pytest.raises(IsADirectoryError, match="is a folder"):
        check_result_path(tmp_path)
