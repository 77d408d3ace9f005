"""The recipe as data and its campaign: profiles and the scale knob, done-markers, resuming,
refusing a changed stage, the plan from measured timings, provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lofihippseg.errors import LoFiError
from lofihippseg.recipe import campaign, plan
from lofihippseg.recipe import provenance as pv
from lofihippseg.recipe.spec import REPO, load_recipe, stage_inputs


def test_the_recipe_declares_every_stage_with_iterations_and_seeds():
    recipe = load_recipe()
    stages = recipe["stages"]
    kinds = [s["kind"] for s in stages.values()]
    for kind in ("msd_split", "pool", "localiser", "pair", "assemble", "refiner_data",
                 "refiner", "export", "quality", "card"):  # fmt: skip
        assert kind in kinds
    for name, stage in stages.items():
        if stage["kind"] in ("pair", "localiser", "refiner"):
            assert stage["iterations"] > 0 and "seed" in stage, name
            assert 0 < stage["every"] <= stage["iterations"], name  # checkpoint interval
    # from scratch: no stage starts from earlier weights
    assert all("init1" not in s.get("overrides", {}) for s in stages.values())
    # every stage reads only stages before it
    names = list(stages)
    for i, stage in enumerate(stages.values()):
        assert all(names.index(dep) < i for dep in stage_inputs(stage))


def test_profile_and_scale_knob(tmp_path):
    full = load_recipe()
    smoke = load_recipe(profile="smoke")
    assert smoke["stages"]["pair_t2"]["iterations"] < full["stages"]["pair_t2"]["iterations"]
    # the smoke keeps the patches, batches and widths: its timings plan the full campaign
    assert smoke["stages"]["pair_t2"]["config"] == full["stages"]["pair_t2"]["config"]
    assert smoke["stages"]["refiner"]["filters"] == full["stages"]["refiner"]["filters"]
    assert smoke["stages"]["pair_t2"]["overrides"]["unsided_side"] == "left"  # merged, not lost
    big = load_recipe(scale=2.5, batch_scale=2, device="cuda")
    assert big["stages"]["pair_t1"]["iterations"] == 6000  # 2,400 x 2.5
    assert big["stages"]["refiner_data"]["count"] == 600
    assert big["stages"]["refiner"]["batch"] == 8
    pool = full["stages"]["pair_t2"]["overrides"]["synthetic_pool"]
    assert big["stages"]["pair_t2"]["overrides"]["synthetic_pool"] == round(pool * 2.5)
    assert big["stages"]["pair_t1"]["overrides"]["batch_size"] == 8
    assert big["run"] == {"profile": None, "scale": 2.5, "batch_scale": 2, "device": "cuda",
                          "file": str(REPO / "release" / "recipe.toml")}  # fmt: skip
    with pytest.raises(LoFiError, match="no profile 'nope'"):
        load_recipe(profile="nope")
    with pytest.raises(LoFiError, match="scale"):
        load_recipe(scale=0)
    bad = tmp_path / "bad.toml"
    bad.write_text('[stages.x]\nkind = "dance"\n')
    with pytest.raises(LoFiError, match="unknown kind 'dance'"):
        load_recipe(bad)


def _toy_recipe(tmp_path: Path, iterations: int = 6) -> dict:
    text = f"""
name = "toy"
[data]
maps = "{tmp_path / "maps"}"
require_msd = false
[stages.a]
kind = "pool"
n = 2
n_val = 0
[stages.b]
kind = "refiner"
data = "stage:a"
iterations = {iterations}
every = 2
[stages.c]
kind = "export"
model = "stage:b"
"""
    (tmp_path / "maps").mkdir(exist_ok=True)
    path = tmp_path / "toy.toml"
    path.write_text(text)
    return load_recipe(path)


class Toy:
    """Stage functions that count what they do, checkpoint every ``every`` and can be
    interrupted (as a kill would) after a given iteration."""

    def __init__(self, stop_after: int | None = None):
        self.calls: list[str] = []
        self.stop_after = stop_after

    def pool(self, ctx, p):
        self.calls.append(ctx.name)
        (ctx.folder / "cases.txt").write_text("x\n" * p["n"])
        ctx.timing.update(unit="case", units=p["n"], seconds=4.0)
        return {"cases": p["n"]}

    def train(self, ctx, p):
        self.calls.append(ctx.name)
        ckpt = ctx.folder / "last.json"
        start = json.loads(ckpt.read_text())["it"] if ckpt.exists() else 0
        for it in range(start, p["iterations"]):
            if self.stop_after is not None and it == self.stop_after:
                raise KeyboardInterrupt
            if (it + 1) % p["every"] == 0:
                ckpt.write_text(json.dumps({"it": it + 1}))
        ctx.timing.update(unit="iteration", per_unit=0.5)
        return {"iterations": p["iterations"], "started_at": start}

    def export(self, ctx, p):
        self.calls.append(ctx.name)
        (ctx.folder / campaign.BUNDLE_NAME).write_bytes(b"bundle")
        return {"bundle": campaign.BUNDLE_NAME}


def _patch(monkeypatch, toy: Toy) -> None:
    monkeypatch.setitem(campaign.STAGES, "pool", toy.pool)
    monkeypatch.setitem(campaign.STAGES, "refiner", toy.train)
    monkeypatch.setitem(campaign.STAGES, "export", toy.export)


def test_campaign_resumes_from_the_last_checkpoint_and_skips_done_stages(tmp_path, monkeypatch):
    recipe, out = _toy_recipe(tmp_path), tmp_path / "campaign"
    stopped = Toy(stop_after=5)  # killed at iteration 5: the checkpoint of 4 survives
    _patch(monkeypatch, stopped)
    with pytest.raises(KeyboardInterrupt):
        campaign.run_campaign(recipe, out, log=lambda s: None)
    assert (out / "01_a" / campaign.DONE).is_file()
    assert not (out / "02_b" / campaign.DONE).exists()  # no marker for a stopped stage
    again = Toy()
    _patch(monkeypatch, again)
    bundle = campaign.run_campaign(recipe, out, log=lambda s: None)
    assert bundle == out / "03_c" / campaign.BUNDLE_NAME and bundle.is_file()
    assert again.calls == ["b", "c"]  # the pool was not made again
    done = json.loads((out / "02_b" / campaign.DONE).read_text())
    assert done["record"] == {"iterations": 6, "started_at": 4}  # lost at most `every`
    third = Toy()
    _patch(monkeypatch, third)
    assert campaign.run_campaign(recipe, out, log=lambda s: None) == bundle
    assert third.calls == []
    saved = json.loads((out / "recipe_as_run.json").read_text())
    assert saved["stages"]["b"]["iterations"] == 6


def test_campaign_stops_after_the_stage_named_and_continues_later(tmp_path, monkeypatch):
    recipe, out = _toy_recipe(tmp_path), tmp_path / "campaign"
    first = Toy()
    _patch(monkeypatch, first)
    assert campaign.run_campaign(recipe, out, log=lambda s: None, until="a") is None
    assert first.calls == ["a"] and not (out / "02_b").exists()
    assert campaign.run_campaign(recipe, out, log=lambda s: None, until="a") is None  # done
    rest = Toy()
    _patch(monkeypatch, rest)
    assert campaign.run_campaign(recipe, out, log=lambda s: None).is_file()
    assert rest.calls == ["b", "c"]
    with pytest.raises(LoFiError, match="no such stage"):
        campaign.run_campaign(recipe, out, log=lambda s: None, until="nope")


def test_campaign_refuses_a_done_stage_whose_settings_changed(tmp_path, monkeypatch):
    out = tmp_path / "campaign"
    _patch(monkeypatch, Toy())
    campaign.run_campaign(_toy_recipe(tmp_path), out, log=lambda s: None)
    with pytest.raises(LoFiError, match="02_b was done with other settings"):
        campaign.run_campaign(_toy_recipe(tmp_path, iterations=8), out, log=lambda s: None)


def test_campaign_needs_its_data(tmp_path):
    recipe = load_recipe()
    recipe["data"] = {"maps": str(tmp_path / "none"), "msd": str(tmp_path / "none")}
    with pytest.raises(LoFiError, match="no label maps folder"):
        campaign.run_campaign(recipe, tmp_path / "c", log=lambda s: None)


def test_plan_multiplies_measured_timings_and_names_what_is_unmeasured(tmp_path, monkeypatch):
    _patch(monkeypatch, Toy())
    small = tmp_path / "small"
    campaign.run_campaign(_toy_recipe(tmp_path), small, log=lambda s: None)
    recipe = _toy_recipe(tmp_path)
    recipe["stages"]["b"]["iterations"] = 7200
    rows = {r.name: r for r in plan.campaign_plan(recipe, tmp_path / "big", [small])}
    assert rows["b"].per_unit == 0.5 and rows["b"].hours == pytest.approx(1.0)
    assert rows["a"].per_unit == pytest.approx(2.0)  # 4 s for 2 cases
    assert "measured in" in rows["b"].source and not rows["b"].done
    unmeasured = plan.campaign_plan(recipe, tmp_path / "big")
    assert all(r.per_unit is None for r in unmeasured)
    text = plan.describe(unmeasured)
    assert "not measured yet: a, b, c" in text
    assert "02_b" not in plan.status(recipe, tmp_path / "big")
    assert "done in" in plan.status(recipe, small)
    # a stage done in this campaign plans with its own wall time (validation, checkpoints and
    # slow first iterations included), not the seconds timed when it started
    wall = json.loads((small / "02_b" / "timing.json").read_text())["seconds"]
    here = {r.name: r for r in plan.campaign_plan(_toy_recipe(tmp_path), small)}
    assert here["b"].per_unit == pytest.approx(wall / 6) and "wall time" in here["b"].source
    assert here["a"].per_unit == pytest.approx(2.0)


def test_a_reference_campaign_plans_a_campaign_before_it_ran(tmp_path, monkeypatch):
    _patch(monkeypatch, Toy())
    done = tmp_path / "done"
    campaign.run_campaign(_toy_recipe(tmp_path), done, log=lambda s: None)
    reference = tmp_path / "timings.json"
    written = plan.write_reference(done, threads=2, path=reference)
    assert written["recipe"] == "toy" and written["machine"]["threads"] == 2
    wall = json.loads((done / "02_b" / "timing.json").read_text())["seconds"]
    assert written["stages"]["b"]["per_unit"] == pytest.approx(wall / 6)
    # a longer recipe, nothing run yet: each stage at the reference's wall seconds per unit
    recipe = _toy_recipe(tmp_path, iterations=600)
    rows = {r.name: r for r in plan.campaign_plan(recipe, tmp_path / "new", [], reference, 2)}
    assert rows["b"].per_unit == pytest.approx(wall / 6) and rows["b"].units == 600
    assert rows["b"].source.startswith("reference toy") and "differs" not in rows["b"].source
    assert "min to the exported bundle" in plan.describe(list(rows.values()))
    # other threads: still used, but said to be a rough guide; other batches: not used
    other = plan.campaign_plan(recipe, tmp_path / "new", [], reference, 1)
    assert "this machine differs (threads)" in other[1].source
    recipe["run"]["batch_scale"] = 2
    assert plan.campaign_plan(recipe, tmp_path / "new", [], reference, 2)[1].per_unit is None
    with pytest.raises(LoFiError, match="no campaign ran here"):
        plan.write_reference(tmp_path / "nothing", threads=2, path=reference)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(LoFiError, match="cannot write the reference timings"):
        plan.write_reference(done, threads=2, path=tmp_path / "a_file" / "t.json")


def test_provenance_hashes_commit_and_versions(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("hello")
    rows = pv.file_list([a])
    assert rows == [{"name": "a.txt", "sha256": pv.sha256(a)}]
    assert rows[0]["sha256"].startswith("2cf24dba")  # sha256("hello")
    b = tmp_path / "b.txt"
    b.write_text("hello!")
    assert pv.list_digest(rows) != pv.list_digest(pv.file_list([b]))
    versions = pv.library_versions()
    assert "torch" in versions and "python" in versions
    git = pv.git_commit(REPO)
    assert git["commit"] is None or len(git["commit"]) == 40
    assert pv.git_commit(tmp_path) == {"commit": None, "dirty": None}


def test_a_rebuilt_bundle_ships_only_when_no_worse_on_every_set():
    from lofihippseg.recipe.card import no_worse_than

    shipped = {"sets": {"random": {"dice_left": 0.781, "dice_right": 0.776},
                        "defaults": {"dice_left": 0.725, "dice_right": 0.712}},
               "msd": {"stored": {"dice": 0.8703}, "mirrored": {"dice": 0.8714}}}  # fmt: skip
    rebuilt = json.loads(json.dumps(shipped))
    rebuilt["sets"]["random"]["dice_left"] = 0.772  # within 0.01
    verdict = no_worse_than(rebuilt, shipped)
    assert verdict["all"] and set(verdict["sets"]) == {"random", "defaults", "msd_stored",
                                                       "msd_mirrored"}  # fmt: skip
    rebuilt["msd"]["mirrored"]["dice"] = 0.85  # 0.02 worse on one set: not shipped
    verdict = no_worse_than(rebuilt, shipped)
    assert not verdict["all"] and not verdict["sets"]["msd_mirrored"]["ok"]
    assert verdict["sets"]["random"]["ok"]
    assert not no_worse_than({"sets": {}}, shipped)["all"]  # nothing compared: not shown better


def test_the_card_holds_the_real_heads_and_refuses_a_bundle_worse_there():
    from lofihippseg.recipe.card import card_table, no_worse_than

    heads = {"n": 30, "dice_left": 0.85, "dice_right": 0.86, "hd95_left": 1.9,
             "hd95_right": 1.8, "volume_ratio_median": 0.97, "plausible": 30, "both_found": 30,
             "seconds_median": 0.6}  # fmt: skip
    shipped = {"sets": {}, "real_heads": heads, "t1_head": {"left_ml": 3.0, "right_ml": 3.1,
               "left_on_left": True, "seconds": 0.5}}  # fmt: skip
    rebuilt = json.loads(json.dumps(shipped))
    assert no_worse_than(rebuilt, shipped)["all"]
    rebuilt["real_heads"]["dice_right"] = 0.80  # worse on the real heads only: not shipped
    verdict = no_worse_than(rebuilt, shipped)
    assert not verdict["all"] and not verdict["sets"]["real_heads"]["ok"]
    table = card_table(shipped)
    assert "held-back real IXI T1 heads (30; both sides found 30) | 0.850 | 0.860 |" in table


@pytest.mark.slow
def test_smoke_campaign_end_to_end(tmp_path):
    """Every stage at toy scale (what `make model-smoke` runs; several minutes)."""
    from conftest import shared_path

    from lofihippseg.cli.model_info import bundle_info
    from lofihippseg.inference.model_loading import load_model

    shared_path("data", "synthseg_label_maps")
    bundle = campaign.run_campaign(load_recipe(profile="smoke"), tmp_path / "c", log=print)
    model = load_model(str(bundle))
    assert model.refiner is not None and model.localiser is not None and model.tta
    info = bundle_info(bundle)
    stages = info["provenance"]["stages"]
    assert stages["pair_t2"]["iterations"] == 4 and stages["pool"]["maps"]
    # the real training heads: in both pairs' data (listed twice), bfloat16 where native, and
    # the refiner's cubes
    for folder in ("05_pair_t2", "06_pair_t1"):
        config = json.loads((tmp_path / "c" / folder / "run" / "config.json").read_text())
        assert config["data"][1].endswith("heads/heads.csv") and config["amp"], folder
        assert config["loss"]["mutual_rampup"] == 0.2 and config["synthetic_pool"] == 4, folder
        listed = (tmp_path / "c" / folder / "heads" / "train.list").read_text().split()
        assert len(listed) == 2 * len(set(n.rsplit("_r", 1)[0] for n in listed))
    assert stages["refiner_data"]["real_heads"] == len(stages["ixi"]["train"]) > 0
    assert list((tmp_path / "c" / "08_refiner_data").glob("real_IXI*.npz"))
    card = json.loads((tmp_path / "c" / "12_card" / "card.json").read_text())
    assert "t1_head" in card


def test_recipe_command_line_plan_status_and_one_line_errors(tmp_path, capsys):
    from lofihippseg.recipe.__main__ import main

    gpu = tmp_path / "gpu.json"  # a reference of another device does not plan this CPU run
    gpu.write_text(json.dumps({"machine": {"device": "cuda"}, "stages": {}}))
    assert main(["plan", "--out", str(tmp_path / "c"), "--reference", str(gpu)]) == 0
    out = capsys.readouterr().out
    assert "pair_t2" in out and "8000 iteration(s)" in out and "not measured yet" in out
    none, broken = tmp_path / "none.json", tmp_path / "broken.json"
    broken.write_text("{")
    for wrong, said in ((none, "no such reference timings file"), (broken, "cannot read")):
        assert main(["plan", "--out", str(tmp_path / "c"), "--reference", str(wrong)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {wrong}: {said}") and err.count("\n") == 1
    assert main(["plan", "--out", str(tmp_path / "c")]) == 0  # the committed reference
    assert "reference lofihippseg-recipe" in capsys.readouterr().out
    assert main(["reference", "--out", str(tmp_path / "c"), "--reference", str(none)]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not none.exists()
    assert main(["status", "--out", str(tmp_path / "c")]) == 0
    assert "pair_t2       pair         not started" in capsys.readouterr().out
    for option, value in (("--threads", "0"), ("--scale", "-1"), ("--batch-scale", "x")):
        with pytest.raises(SystemExit) as stop:  # argparse's one-line usage error
            main(["plan", option, value])
        assert stop.value.code == 2 and option in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("stages = [")
    assert main(["plan", "--recipe", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: cannot read the recipe") and err.count("\n") == 1


def test_the_stage_gain_table_sets_each_stage_s_gain_beside_its_minutes(tmp_path):
    import importlib.util

    from conftest import REPO

    path = REPO / "benchmarks" / "recipe_stage_gain.py"
    spec = importlib.util.spec_from_file_location("recipe_stage_gain", path)
    gain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gain)
    for name, seconds in (("04_localiser", 600), ("08_refiner_data", 300), ("09_refiner", 900)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "timing.json").write_text(json.dumps({"seconds": seconds}))
    minutes = gain.stage_minutes(tmp_path)
    assert minutes == {"localiser": 10.0, "refiner_data": 5.0, "refiner": 15.0}
    full = {"sets": {"random": {"dice_left": 0.80, "dice_right": 0.70}}}
    without = {"refiner": {"sets": {"random": {"dice_left": 0.76, "dice_right": 0.70}}}}
    rows = gain.table(minutes, full, without).splitlines()
    assert "| localiser | 10.0 | | | | | |" in rows
    # the refiner's cubes count toward the refiner: 20 minutes for +0.02 mean Dice
    assert "| refiner | 20.0 | random | 0.750 | 0.730 | +0.020 | +0.0100 |" in rows
    assert not any(r.startswith("| refiner_data") for r in rows)
