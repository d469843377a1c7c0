"""Training recipes on tiny data: one-cycle, the weight average, activation caches, time budgets, bad input."""
import json

import numpy as np
import pytest
import tf_keras as keras
from typer.testing import CliRunner

from edgekit.cli import app
from edgekit.errors import EdgeError
from edgekit.train import activations
from edgekit.train.config import build_config
from edgekit.train.fit import PhaseState, run_phase
from edgekit.train.run import train
from edgekit.train.schedules import OneCycle, OptimizerSpec, custom_objects, make_optimizer

pytestmark = pytest.mark.tf  # trains, converts or loads models with TensorFlow


def cfg(data, **kw):
    base = dict(data=str(data), batch_size=8, epochs=2, early_stopping_patience=0, seed=7)
    base.update(kw)
    return build_config(None, base)


MNV2_CUT = dict(preset="mobilenet_v2", weights="none", alpha=0.35, input_size=32, fine_tune_from="block_5_add",
                cache_views=3, lr=1e-3, epochs=1)


def test_one_cycle_shape():
    s = OneCycle(peak=0.2, total_steps=100, warmup_fraction=0.15, final=0.01)
    lr = [float(s(i)) for i in range(0, 121)]
    assert lr[0] == 0.0 and lr[15] == pytest.approx(0.2)
    assert all(a < b for a, b in zip(lr[:15], lr[1:16]))        # linear warm-up
    assert all(a > b for a, b in zip(lr[15:100], lr[16:101]))    # linear anneal
    assert lr[100] == pytest.approx(0.01) and lr[120] == pytest.approx(0.01)
    assert lr[57] == pytest.approx(0.01 + 0.19 * 43 / 85, rel=1e-5)
    s.set_total_steps(60)  # without the step it stands at: the anneal is re-aimed from the warm-up's end
    assert float(s(40)) < lr[40] and float(s(60)) == pytest.approx(0.01)
    s = OneCycle(peak=0.2, total_steps=100, warmup_fraction=0.15, final=0.01)
    s.set_total_steps(150, at_step=57)  # a longer plan at step 57: on from lr[57], in a line to 0.01 at 150
    # (steps before the anchor are the past: the schedule is not asked for them again)
    assert float(s(57)) == pytest.approx(lr[57]) and float(s(150)) == pytest.approx(0.01)
    assert float(s(100)) == pytest.approx(0.01 + (lr[57] - 0.01) * 50 / 93, rel=1e-5)
    again = OneCycle.from_config(s.get_config())   # what --resume rebuilds from last.keras
    assert all(float(again(i)) == pytest.approx(float(s(i))) for i in (5, 30, 57, 90, 149))


def _tiny_problem(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(96, 6)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[(x[:, 0] > 0).astype(int) + (x[:, 1] > 1).astype(int)]
    return x, y


def test_weight_average_is_validated_saved_and_resumed(tmp_path):
    x, y = _tiny_problem()
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(make_optimizer(OptimizerSpec("sgd", 0.5, "onecycle", ema=0.9), 12, 2), "categorical_crossentropy")
    state = PhaseState("train")
    run_phase(model, state, tmp_path, train=(x, y), val=(x[:32], y[:32]), epochs=1, steps_per_epoch=None,
              patience=0, verbose=0, batch_size=8)
    # what was validated is what the phase ends with: the average
    assert model.evaluate(x[:32], y[:32], verbose=0) == pytest.approx(state.history[0]["val_loss"], rel=1e-5)
    last = keras.models.load_model(tmp_path / "last.keras", custom_objects=custom_objects())
    # the checkpoint holds the training weights and, in its optimizer, the averages: --resume restores both
    averages = [v.numpy() for v in last.optimizer._model_variables_moving_average]
    raw = [v.numpy() for v in last.trainable_variables]
    ended = [v.numpy() for v in model.trainable_variables]
    assert all(np.array_equal(a, b) for a, b in zip(averages, ended))
    assert not all(np.allclose(a, b) for a, b in zip(averages, raw))
    # resuming continues from the restored average, not from the training weights
    before = [a.copy() for a in averages]
    state.done = False  # as an interrupted phase would be
    run_phase(last, state, tmp_path, train=(x, y), val=(x[:32], y[:32]), epochs=2, steps_per_epoch=None,
              patience=0, verbose=0, batch_size=8)
    assert state.epochs_done == 2 and last.optimizer.iterations.numpy() == 24
    moved = [v.numpy() for v in last.optimizer._model_variables_moving_average]
    assert any(not np.array_equal(a, b) for a, b in zip(before, moved))


def test_ema_run_saves_the_average(tiny_folder, tmp_path):
    run = train(cfg(tiny_folder, preset="resnet8", optimizer="sgd", lr=0.05, lr_schedule="onecycle", ema=0.9,
                    epochs=2), tmp_path / "run")
    saved = keras.models.load_model(run / "model.keras", compile=False)
    best = keras.models.clone_model(saved)
    best.load_weights(run / "checkpoints" / "train" / "best.weights.h5")
    assert all(np.array_equal(a, b) for a, b in zip(saved.get_weights(), best.get_weights()))
    last = keras.models.load_model(run / "checkpoints" / "train" / "last.keras", custom_objects=custom_objects())
    state = json.loads((run / "checkpoints" / "train" / "state.json").read_text())
    if state["best_epoch"] == 2:
        averages = [v.numpy() for v in last.optimizer._model_variables_moving_average]
        assert all(np.array_equal(a, b) for a, b in zip(averages, [v.numpy() for v in saved.trainable_variables]))


def test_activation_cache_hits_and_the_model_is_bottom_plus_top(tiny_folder, tmp_path, cache_dir):
    first = train(cfg(tiny_folder, **MNV2_CUT), tmp_path / "a")
    m1 = json.loads((first / "metrics.json").read_text())
    assert m1["activation_cache_hit"] is False and m1["cut"] == "block_5_add" and set(m1["phases"]) == {"top"}
    entries = list((cache_dir / "activations").iterdir())
    assert len(entries) == 1 and np.load(entries[0] / "train.npy", mmap_mode="r").shape[:2] == (3, 42)
    second = train(cfg(tiny_folder, **MNV2_CUT), tmp_path / "b")
    assert json.loads((second / "metrics.json").read_text())["activation_cache_hit"] is True
    assert len(list((cache_dir / "activations").iterdir())) == 1
    # another K is another entry
    train(cfg(tiny_folder, **{**MNV2_CUT, "cache_views": 2}), tmp_path / "c")
    assert len(list((cache_dir / "activations").iterdir())) == 2

    model = keras.models.load_model(second / "model.keras", compile=False)
    import zipfile
    with zipfile.ZipFile(second / "model.keras") as z:  # no optimizer state rides along in the nested top
        import h5py
        with z.open("model.weights.h5") as fh, h5py.File(fh, "r") as h5:
            names = []
            h5.visit(names.append)
    assert not any("optimizer" in n for n in names)
    from edgekit.train.data import load_dataset
    from edgekit.train.pipeline import to_model_input
    from edgekit_runtime import PreprocessSpec
    spec = PreprocessSpec.load(second / "preprocess.json")
    x = to_model_input(load_dataset(str(tiny_folder), spec.size, seed=7).test.x[:8], spec).numpy()
    whole = model.predict_on_batch(x)
    parts = model.get_layer("top").predict_on_batch(model.get_layer("bottom").predict_on_batch(x))
    assert np.array_equal(whole, parts)
    # the cache's view 0 is the frozen bottom's output on the training images (float16)
    data = load_dataset(str(tiny_folder), spec.size, seed=7)
    cached = np.load(entries[0] / "train.npy", mmap_mode="r")[0, :4]
    fresh = model.get_layer("bottom").predict_on_batch(to_model_input(data.train.x[:4], spec).numpy())
    assert np.array_equal(cached, fresh.astype(np.float16))


def test_resume_with_a_changed_cache_key_says_what_changed(tiny_folder, tmp_path, cache_dir):
    run = train(cfg(tiny_folder, **MNV2_CUT), tmp_path / "run")
    state_file = run / "checkpoints" / "top" / "state.json"
    state = json.loads(state_file.read_text())
    state["cache_key"]["data"] = "0" * 64
    state["done"] = False
    state_file.write_text(json.dumps(state))
    with pytest.raises(EdgeError, match=r"cache key changed.*data \(\"0000"):
        train(cfg(tiny_folder), tmp_path / "run", resume=True)


def test_cut_names_are_checked():
    backbone = keras.applications.MobileNetV2(weights=None, alpha=0.35, include_top=False, input_shape=(32, 32, 3))
    valid = activations.block_boundaries(backbone)
    assert {"block_2_add", "block_9_add", "block_12_add", "block_16_project_BN"} <= set(valid)
    assert "block_9_expand" not in valid and "block_2_project_BN" not in valid
    with pytest.raises(EdgeError, match=r"'block_9_ad' is not a layer.*Nearest names: block_9_add"):
        activations.check_cut(backbone, "block_9_ad")
    with pytest.raises(EdgeError, match=r"'block_9_expand' is inside a residual block.*block_9_add"):
        activations.check_cut(backbone, "block_9_expand")


def test_cache_that_does_not_fit_the_disk_leaves_nothing(tiny_folder, tmp_path, cache_dir, monkeypatch):
    import shutil
    from collections import namedtuple
    usage = namedtuple("usage", "total used free")
    real_usage, real_memmap = shutil.disk_usage, np.lib.format.open_memmap
    # only the activation cache's disk is full: the decoded images (a cache of their own) still fit
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 << 20, 10 << 20, 1 << 20)
                        if "activations" in str(p) else real_usage(p))
    with pytest.raises(EdgeError, match="activation cache needs .* GB free"):
        train(cfg(tiny_folder, **MNV2_CUT), tmp_path / "a")
    monkeypatch.undo()

    def full(filename, *a, **k):
        if "activations" in str(filename):
            raise OSError(28, "No space left on device")
        return real_memmap(filename, *a, **k)
    monkeypatch.setattr(np.lib.format, "open_memmap", full)
    with pytest.raises(EdgeError, match="No space left on device.*nothing partial was kept"):
        train(cfg(tiny_folder, **MNV2_CUT), tmp_path / "b")
    assert not any((cache_dir / "activations").iterdir())


def test_budget_too_small_for_any_training_is_refused_before_training(tiny_folder, tmp_path):
    with pytest.raises(EdgeError, match="cannot hold any training"):
        train(cfg(tiny_folder, preset="resnet8", time_budget=0.01), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints" / "train" / "last.keras").exists()
    assert not (tmp_path / "run" / "model.keras").exists()


def test_budget_too_small_for_the_activation_cache_is_refused_before_building_it(tiny_folder, tmp_path, cache_dir):
    args = ["train", "--data", str(tiny_folder), "--out", str(tmp_path / "run"), "--preset", "mobilenet_v2",
            "--weights", "none", "--set", "alpha=0.35", "--input-size", "32", "--fine-tune-from", "block_5_add",
            "--time-budget", "0.01"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "cannot hold the activation cache and any training" in result.output and "Traceback" not in result.output
    assert not (cache_dir / "activations").exists() or not any((cache_dir / "activations").iterdir())


def test_budgeted_run_plans_and_records(tiny_folder, tmp_path):
    run = train(cfg(tiny_folder, preset="resnet8", time_budget=0.6, lr_schedule="onecycle", optimizer="sgd",
                    lr=0.05, augment=["flip", "crop:2", "cutout:4"]), tmp_path / "run")
    info = json.loads((run / "run.json").read_text())["time_budget"]
    # the plan fits the budget; whether the wall clock kept to it is a benchmark's job (a loaded machine is slower)
    assert info["planned_epochs"] >= 1 and info["planned_seconds"] <= 0.6 * 60
    assert 0 < info["probe"]["input_share"] < 1
    epochs = json.loads((run / "metrics.json").read_text())["phases"]["train"]["epochs"]
    # the plan is re-made from the epochs' own times (it may grow early on, or shrink), never past what fit()
    # was given, and the run stops at it
    assert 1 <= epochs == info["epochs_run"] <= info["final_planned_epochs"] <= 2 * info["planned_epochs"]


def test_short_budget_trains_rounds_of_part_of_an_epoch_and_says_so(tiny_folder, tmp_path, monkeypatch, capsys):
    from edgekit.train import budget
    monkeypatch.setattr(budget, "ROUND_SPLITS", (2,))  # what a budget too short for MIN_ROUNDS epochs picks
    # 1 min: 0.6 held the work before and after training on an idle machine, but not on a loaded one
    run = train(cfg(tiny_folder, preset="resnet8", time_budget=1.0, lr_schedule="onecycle", optimizer="sgd",
                    lr=0.05), tmp_path / "run")
    out = capsys.readouterr().err  # the console writes to stderr
    assert "rounds of 1/2 epoch" in out and "each round of 1/2 epoch is validated" in out
    info = json.loads((run / "run.json").read_text())["time_budget"]
    assert info["rounds_per_epoch"] == 2 and info["planned_epochs"] == info["planned_rounds"] / 2
    assert info["rounds_run"] >= 1 and info["epochs_run"] == info["rounds_run"] / 2
    state = json.loads((run / "checkpoints" / "train" / "state.json").read_text())
    assert state["rounds_per_epoch"] == 2 and state["epochs_done"] == info["rounds_run"] and state["done"]
    assert (run / "model.keras").is_file()


def test_budget_plan_grows_and_shrinks_and_moves_the_schedule_without_a_jump(tmp_path):
    import time
    from edgekit.train.fit import Checkpointer, Deadline
    model = keras.Sequential([keras.layers.Input((2,)), keras.layers.Dense(2)])
    model.compile(make_optimizer(OptimizerSpec("sgd", 0.1, "onecycle"), steps_per_epoch=10, epochs=20), "mse")
    rate = model.optimizer._learning_rate

    def replan(done, seconds, left, planned=20, cap=40):
        state = PhaseState("train", epochs_done=done, planned_epochs=planned)
        cb = Checkpointer(tmp_path, state, 0, 0.0, None, None, Deadline(time.perf_counter() + left, 0.0, 10, cap))
        cb.set_model(model)
        cb.progbar = keras.callbacks.ProgbarLogger(count_mode="steps")
        cb.epoch_seconds = seconds
        cb._keep_to_deadline()
        return state.planned_epochs, cb.progbar.epochs, model.stop_training

    # epochs of 2 s (the first one traced), 30 more fit in the time left after 3 of a 20-epoch plan: a probe on a slow spell
    assert replan(3, [9.0, 2.0, 2.0], left=61.0) == (33, 33, False)
    assert float(rate.total) == 330.0
    assert replan(3, [9.0, 2.0, 2.0], left=600.0)[0] == 40          # never past what fit() was given
    assert replan(3, [9.0, 2.0], left=600.0)[0] == 20               # one steady epoch is not evidence yet
    assert replan(3, [9.0, 2.0, 2.0], left=77.0, planned=40, cap=80)[0] == 40  # 41 would fit: under 3 %, no re-aim
    model.optimizer.iterations.assign(100)                          # 10 epochs of 10 steps done: past the warm-up
    before = float(rate(100))
    assert replan(10, [9.0, 2.0, 2.0, 5.0, 5.0], left=11.0) == (12, 12, False)  # slower: the plan shrinks
    assert float(rate.total) == 120.0 and float(rate(100)) == pytest.approx(before)  # ... and the rate does not jump
    assert float(rate(120)) == pytest.approx(0.0, abs=1e-7)
    assert replan(10, [9.0, 2.0, 2.0], left=31.0, planned=12) == (25, 25, False)  # faster again: it grows back
    assert float(rate(100)) == pytest.approx(before) and float(rate(250)) == pytest.approx(0.0, abs=1e-7)
    assert float(rate(175)) == pytest.approx(before / 2, rel=1e-5)   # a straight line from where it stood
    assert replan(12, [9.0, 2.0, 2.0], left=0.0)[2] is True        # out of time: fit stops
    model.stop_training = False
    assert replan(1, [9.0], left=600.0, planned=1) == (1, 1, True)  # a plan of one epoch stops after it
    model.stop_training = False
    assert replan(1, [9.0], left=600.0, planned=3)[2] is False


def test_cli_rejects_bad_augment_and_cut(tiny_folder, tmp_path):
    result = CliRunner().invoke(app, ["train", "--data", str(tiny_folder), "--augment", "flip,rotate"])
    assert result.exit_code != 0 and "unknown op 'rotate'" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["train", "--data", str(tiny_folder), "--preset", "resnet8", "--fine-tune-from",
                                      "block_9_add", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "trained whole from scratch" in result.output


def test_distillation_blends_cached_teacher_answers(tiny_folder, tiny_run, tmp_path, cache_dir):
    from edgekit.train.teacher import blend
    kw = dict(preset="resnet8", epochs=1, teacher=str(tiny_run), distill_weight=0.7)
    first = json.loads((train(cfg(tiny_folder, **kw), tmp_path / "a") / "metrics.json").read_text())
    assert first["teacher_cache_hit"] is False and 0 <= first["teacher_train_agreement"] <= 1
    second = json.loads((train(cfg(tiny_folder, **kw), tmp_path / "b") / "metrics.json").read_text())
    assert second["teacher_cache_hit"] is True
    targets = blend(np.array([0, 2]), np.array([[0.5, 0.5, 0.0], [0.1, 0.1, 0.8]], np.float32), 0.7)
    assert np.allclose(targets, [[0.65, 0.35, 0.0], [0.07, 0.07, 0.86]]) and np.allclose(targets.sum(1), 1)
    import shutil
    other = tmp_path / "other"
    for split in ("train", "test"):
        for c, new in (("red", "rouge"), ("green", "vert"), ("blue", "bleu")):
            shutil.copytree(tiny_folder / split / c, other / split / new)
    with pytest.raises(EdgeError, match="a teacher must answer in the same classes"):
        train(cfg(other, **kw), tmp_path / "c")


def test_cosine_shape_and_re_aim():
    from edgekit.train.schedules import WarmupCosine
    s = WarmupCosine(peak=1.0, total_steps=110, warmup_steps=10)
    lr = [float(s(i)) for i in range(0, 111)]
    assert lr[0] == pytest.approx(0.1) and lr[10] == pytest.approx(1.0)
    assert lr[60] == pytest.approx(0.5, abs=1e-6) and lr[110] == pytest.approx(0.0, abs=1e-7)
    assert all(a >= b for a, b in zip(lr[10:110], lr[11:111]))
    s.set_total_steps(60)
    assert float(s(60)) == pytest.approx(0.0, abs=1e-7) and float(s(35)) == pytest.approx(0.5, abs=1e-6)
    s = WarmupCosine(peak=1.0, total_steps=110, warmup_steps=10)
    s.set_total_steps(210, at_step=60)   # longer, from where it stands (0.5): half a cosine from there
    assert float(s(60)) == pytest.approx(0.5, abs=1e-6) and float(s(135)) == pytest.approx(0.25, abs=1e-6)
    assert float(s(210)) == pytest.approx(0.0, abs=1e-7)
    assert float(WarmupCosine.from_config(s.get_config())(135)) == pytest.approx(0.25, abs=1e-6)


def test_flip_tta_is_inside_the_saved_model_and_converts(tiny_folder, tmp_path):
    from edgekit.convert import ConvertConfig, convert
    from edgekit.train import models
    from edgekit_runtime import Classifier
    run = train(cfg(tiny_folder, preset="resnet8", epochs=1, tta="flip"), tmp_path / "run")
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["test_top1_without_tta"] <= 1
    model = models.load_model(run / "model.keras")
    base = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    x = np.random.default_rng(0).random((4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0),
                               (base.predict(x, verbose=0) + base.predict(x[:, :, ::-1], verbose=0)) / 2, atol=1e-6)
    report = convert(ConvertConfig(run, formats="tflite-fp32,tflite-int8", calib_samples=12, val_samples=6))
    assert report.all_passed, [e.get("mismatches") or e.get("error") for e in report.entries]
    clf = Classifier.load(run / "export" / "model_tflite-fp32.tflite")
    pixels = (np.random.default_rng(1).random((3, 32, 32, 3)) * 255).astype(np.uint8)
    np.testing.assert_array_equal(clf.predict(pixels).argmax(1), clf.predict(pixels[:, :, ::-1]).argmax(1))
    with pytest.raises(EdgeError, match="tta must be none or flip, not 'rot'"):
        cfg(tiny_folder, tta="rot")


def test_evaluate_with_flip_tta_records_beside_the_runs_own_figures(tiny_run, tmp_path):
    import shutil
    from edgekit.train.evaluate import evaluate
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = json.loads((run / "metrics.json").read_text())["test"]
    report = evaluate(run, tta="flip")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"] == before and metrics["tta_flip"]["test"]["top1"] == report["top1"]
    assert report["tta"] == "flip" and report["images"] == before["images"]
    with pytest.raises(EdgeError, match="--tta must be one of none, flip, not 'rot'"):
        evaluate(run, tta="rot")


def test_bfloat16_training_saves_a_float32_model(tiny_folder, tmp_path):
    from edgekit import hardware
    setup = hardware.current()
    if setup.onednn and not setup.cpu.onednn_bfloat16:   # e.g. EDGE_CPU=avx2: the refusal is what this CPU gets
        with pytest.raises(EdgeError, match="precision bfloat16 needs a CPU with AVX-512 or AMX"):
            train(cfg(tiny_folder, preset="resnet8", precision="bfloat16"), tmp_path / "refused")
        assert not (tmp_path / "refused" / "checkpoints").exists()
        return
    run = train(cfg(tiny_folder, preset="resnet8", optimizer="sgd", lr=0.05, ema=0.9, precision="bfloat16"),
                tmp_path / "run")
    assert json.loads((run / "metrics.json").read_text())["precision"] == "bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"  # the next model in this process is not bfloat16
    last = keras.models.load_model(run / "checkpoints" / "train" / "last.keras", custom_objects=custom_objects())
    assert {layer.dtype_policy.name for layer in last.layers if layer.weights} == {"mixed_bfloat16", "float32"}
    saved = keras.models.load_model(run / "model.keras", compile=False)
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}
    best = keras.models.clone_model(saved)  # the saved float32 model holds the best (averaged) weights, unrounded
    best.load_weights(run / "checkpoints" / "train" / "best.weights.h5")
    assert all(np.array_equal(a, b) for a, b in zip(saved.get_weights(), best.get_weights()))


def test_hard_examples_are_rescored_and_the_easiest_left_out(tiny_folder, tmp_path):
    from edgekit.train.hard_examples import SCORES_FILE, HardExamples
    from edgekit.train.pipeline import make_dataset
    from edgekit_runtime import PreprocessSpec
    run = train(cfg(tiny_folder, preset="resnet8", hard_examples=0.25, epochs=5, warmup_fraction=0.2), tmp_path / "run")
    # scored after epochs 1, 2, 3 (not after 4 and 5: no epoch would draw from those); the latest two kept
    with np.load(run / "checkpoints" / "train" / SCORES_FILE) as f:
        assert sorted(f.files) == ["2", "3"] and f["3"].shape == (42,) and np.isfinite(f["3"]).all()
    assert json.loads((run / "metrics.json").read_text())["hard_examples"]["scorings"] == 3
    # through the real input pipeline: image i is all i, image 39 the easiest
    x = np.repeat(np.arange(40, dtype=np.uint8), 32 * 32 * 3).reshape(40, 32, 32, 3)
    hard = HardExamples(0.25, tmp_path, score=None)
    hard.scored = {1: np.arange(40, dtype=np.float32)[::-1].copy()}
    ds = make_dataset(x, np.zeros(40, np.int64), PreprocessSpec(height=32, width=32), 8, num_classes=2,
                      shuffle=True, sampler=hard.order)
    epochs = [sorted(int(v) for batch, _ in ds for v in batch.numpy()[:, 0, 0, 0]) for _ in range(3)]
    assert epochs[0] == epochs[1] == list(range(40)) and len(epochs[2]) == 40 and set(epochs[2]) == set(range(30))


def test_alternating_flip_through_the_input_pipeline_follows_the_image_not_the_batch():
    from edgekit.train.augment import parse_policy
    from edgekit.train.pipeline import make_dataset
    from edgekit_runtime import PreprocessSpec
    x = np.full((40, 32, 32, 3), 255, np.uint8)
    x[:, :, 0, :] = np.arange(40, dtype=np.uint8)[:, None, None]  # image i: a left column of value i
    ds = make_dataset(x, np.zeros(40, np.int64), PreprocessSpec(height=32, width=32, scale=(1.0,) * 3), 8,
                      num_classes=2, shuffle=True, augment=parse_policy(["altflip"]), seed=5)

    def flipped_in_one_epoch():
        out = {}
        for batch, _ in ds:
            for img in batch.numpy():
                left = img[0, 0, 0] < 255
                out[int(img[0, 0, 0] if left else img[0, -1, 0])] = not left
        return np.array([out[i] for i in range(40)])

    epochs = [flipped_in_one_epoch() for _ in range(3)]
    assert 10 < epochs[0].sum() < 30 and np.array_equal(epochs[1], ~epochs[0]) and np.array_equal(epochs[2], epochs[0])


@pytest.mark.parametrize("args, message", [
    (["--preset", "mobilenet_v2", "--weights", "none"], "from-scratch network"),
    (["--strategy", "mirrored"], "needs --strategy one"),
], ids=["transfer", "strategy"])
def test_hard_examples_refused_where_they_do_not_apply(tiny_folder, tmp_path, args, message):
    result = CliRunner().invoke(app, ["train", "--data", str(tiny_folder), "--out", str(tmp_path / "run"),
                                      "--set", "hard_examples=0.2", *args])
    assert result.exit_code == 2 and message in result.output and not (tmp_path / "run").exists()
