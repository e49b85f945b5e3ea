"""Populations (gaxp.population): N GANs in one vmapped step equal N separate runs; per-member
outputs, checkpoints, W&B runs; exact resume; sharding of the member axis; bad input."""

import json
import shutil

import jax
import numpy as np
import pytest

from gaxp.config import load
from gaxp.errors import ConfigError
from gaxp.evaluate import load_state
from gaxp.api import run as train

# G without BatchNorm: a bias right before BatchNorm has a zero gradient up to rounding, and Adam
# turns that rounding noise into full-size steps, so such biases differ between any two programs
# (vmapped or not, 1 or 4 devices) while G's function does not; every other leaf agrees to ~1e-8.
TOY = ("model=mlp", "data=ring", "model.g_width=32", "model.d_width=32", "model.z_dim=8",
       "model.g_norm=none", "data.batch_size=32", "trainer.log_every=5", "trainer.sample_every=1000")


def _params(run_dir):
    state = load_state(str(run_dir))[2]
    return jax.device_get({"g": state.g_params, "d": state.d_params, "ema": state.g_ema})


def _assert_close(a, b, rtol=2e-4, atol=2e-6):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) and leaves_a
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def test_population_equals_separate_runs(tiny):
    """3 members with their own seeds, learning rates, penalty weights and EMA half-lives, against
    the 3 runs a user would launch one by one (members sharded over 3 of the 8 devices)."""
    vary = ("population.vary.g_lr=[1e-4,4e-4,1e-3]", "population.vary.gp_weight=[0.5,2,10]",
            "population.vary.ema_kimg=[0.1,1,10]", "population.vary.seed=[3,5,7]")
    common = (*TOY, "loss=wgan_gp", "loss.n_critic=2", "trainer.steps=12", "trainer.ckpt_every=6")
    pop = train(tiny(*common, "trainer.population=3", "trainer.devices=3", *vary, name="pop"))
    assert pop["population"] == 3 and pop["shard"] == "members" and pop["step_traces"] == 1
    assert [m["seed"] for m in pop["members"]] == [3, 5, 7]
    for i, (lr, gp, kimg, seed) in enumerate([(1e-4, 0.5, 0.1, 3), (4e-4, 2, 1, 5), (1e-3, 10, 10, 7)]):
        alone = train(tiny(*common, f"optim.g.lr={lr}", f"loss.penalty_weight={gp}",
                           f"trainer.ema.halflife_kimg={kimg}", f"trainer.seed={seed}",
                           "trainer.devices=1", name=f"alone{i}"))
        member = pop["members"][i]["dir"]
        _assert_close(_params(member), _params(alone["run_dir"]))
        rows = [json.loads(x) for x in open(f"{member}/metrics.jsonl")]
        solo = [json.loads(x) for x in open(f"{alone['run_dir']}/metrics.jsonl")]
        assert [r["step"] for r in rows] == [r["step"] for r in solo] == [5, 10, 12]
        np.testing.assert_allclose([r["train/g_loss"] for r in rows], [r["train/g_loss"] for r in solo],
                                   rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose([r["train/wgan_gp"] for r in rows], [r["train/wgan_gp"] for r in solo],
                                   rtol=1e-3, atol=1e-5)
    # the members really differ (different seeds and settings)
    assert len({m["digest"] for m in pop["members"]}) == 3


def test_population_sharding_modes_agree_and_resume_is_exact(tiny, tmp_path):
    """4 members on 1 device, the member axis over 4 devices, and each batch over 4 devices give
    the same parameters; a run resumed from its middle checkpoint ends bit-identical."""
    common = (*TOY, "trainer.steps=10", "trainer.ckpt_every=5", "trainer.population=4",
              "population.vary.d_lr=[1e-4,2e-4,4e-4,8e-4]")
    one = train(tiny(*common, "trainer.devices=1", name="one"))
    members = train(tiny(*common, "trainer.devices=4", "population.shard=members", name="members"))
    batch = train(tiny(*common, "trainer.devices=4", "population.shard=batch", name="batch"))
    assert (one["shard"], members["shard"], batch["shard"]) == ("members", "members", "batch")
    # population.unroll: each member traced on its own, on one device and 2 per device (shard_map)
    unrolled = [train(tiny(*common, f"trainer.devices={d}", "population.unroll=true", name=f"unrolled{d}"))
                for d in (1, 2)]
    for i in range(4):
        ref = _params(one["members"][i]["dir"])
        for other in (members, batch, *unrolled):
            _assert_close(_params(other["members"][i]["dir"]), ref)
    # resume: drop every member's final checkpoint, continue from step 5
    run = tmp_path / "members"
    for i in range(4):
        shutil.rmtree(run / "members" / f"{i:02d}" / "checkpoints" / "10")
    resumed = train(tiny(*common, "trainer.devices=4", "population.shard=members",
                         f"trainer.resume={run}", name="members"))
    assert resumed["resumed_from"] == 5
    assert [m["digest"] for m in resumed["members"]] == [m["digest"] for m in members["members"]]
    rows = [json.loads(x)["step"] for x in open(run / "members" / "02" / "metrics.jsonl")]
    assert rows == [5, 10]


def test_population_outputs_and_wandb_group(tiny, tmp_path):
    """Each member is a complete run dir (loadable config, samples, checkpoints, summary) and its
    own W&B run (offline here) in the population's group."""
    out = train(tiny(*TOY, "trainer.steps=4", "trainer.sample_every=4", "trainer.population=2",
                     "logger=wandb", "logger.wandb.mode=offline", name="pop"))
    pop = tmp_path / "pop"
    info = json.loads((pop / "population.json").read_text())
    assert info["size"] == 2 and info["seeds"] == [0, 1]
    ids = []
    for i in range(2):
        d = pop / "members" / f"{i:02d}"
        assert (d / "samples" / "step_0000004.png").exists()
        member = json.loads((d / "run.json").read_text())
        cfg = load(member["config"])
        assert cfg.trainer.population == 1 and cfg.trainer.seed == i and cfg.out_dir == str(d)
        assert json.loads((d / "summary.json").read_text())["digest"] == out["members"][i]["digest"]
        runs = list((d / "wandb").glob("offline-run-*"))
        assert len(runs) == 1
        data = next(runs[0].glob("*.wandb")).read_bytes()
        # the run record's protobuf fields: run_group (6) = "pop", display_name (8): what it is
        name = f"mlp-ns-s{i}-m{i:02d}".encode()
        assert b"\x32\x03pop" in data and b"\x42" + bytes([len(name)]) + name in data
        ids.append(member["wandb_id"])
    assert len(set(ids)) == 2 and all(ids)
    with pytest.raises(ConfigError, match="is a population; give one member"):
        load_state(str(pop))


@pytest.mark.parametrize("overrides,message", [
    (("trainer.population=4", "population.vary.g_lr=[1e-4,2e-4]"),
     "population.vary.g_lr has 2 values but trainer.population=4"),
    (("population.vary.g_lr=[1e-4,2e-4]",), "trainer.population=1; set trainer.population=2"),
    (("trainer.population=2", "population.vary.gp_weight=[1,2]"),
     "needs exactly one gradient penalty"),
    (("trainer.population=2", "population.vary.seed=[1,1]"), "repeats a seed"),
    (("trainer.population=2", "population.vary.d_lr=[1e-4,-1]"), "numbers > 0"),
    (("trainer.population=0",), "trainer.population must be >= 1"),
    (("trainer.population=2", "population.shard=rows"), "unknown population.shard 'rows'"),
    (("trainer.population=2", "population.cpu_devices=0"), "population.cpu_devices must be auto or an integer >= 1"),
    (("trainer.population=2", "+population.cores=2"), "unknown key population.cores; valid keys: cpu_devices"),
    (("trainer.population=2", "population.unroll=maybe"), "population.unroll must be auto, true or false"),
])
def test_population_bad_input(tiny, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load(tiny(*TOY, *overrides))


def test_population_members_shard_needs_divisible_devices(tiny):
    with pytest.raises(ConfigError, match=r"trainer.population \(3\) divisible by the 2 devices"):
        train(tiny(*TOY, "trainer.population=3", "trainer.devices=2", "population.shard=members"))


def test_population_spreads_over_the_cores_and_trains_the_same_members(tmp_path):
    """A real `gaxp-train trainer.population=2` with no CPU device count set: one CPU device per
    core (population.cpu_devices=auto), and the members equal those of the one-device program."""
    import os

    from test_cli import gaxp_train

    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        pytest.skip("needs 2 cores")
    common = (*TOY, "trainer.population=2", "trainer.steps=4", "logger=none", "trainer.progress=false",
              "metrics=none")
    runs = {}
    for cpus in ("auto", "1"):
        result = gaxp_train(*common, f"population.cpu_devices={cpus}", f"hydra.run.dir={cpus}",
                            cwd=tmp_path, devices=None)
        assert result.returncode == 0, result.stderr[-3000:]
        said = "population of 2 over 2 CPU devices, one per core" in result.stdout  # Hydra logs there
        assert said == (cpus == "auto"), result.stderr[-3000:]
        runs[cpus] = [_params(tmp_path / cpus / "members" / f"0{i}") for i in range(2)]
    for a, b in zip(runs["auto"], runs["1"]):
        _assert_close(a, b)


def test_jobs_after_a_spread_population_in_one_process_get_a_fresh_process_devices(tmp_path):
    """JAX's CPU device count lasts for the process, and Hydra's default launcher runs a sweep's
    jobs in one process. After a population set 2 CPU devices, a single run gets 1 device and
    equals the same run in its own process; a population of 3 (no divisor of 3 up to 2 cores)
    gets 1 device; a population of 4 gets the 2."""
    import json
    import os

    from test_cli import gaxp_train

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 cores")
    common = (*TOY, "trainer.steps=3", "logger=none", "trainer.progress=false", "metrics=none")
    sweep = gaxp_train("-m", *common, "trainer.population=2,1,3,4", "hydra.sweep.dir=sweep",
                       cwd=tmp_path, devices=None)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    alone = gaxp_train(*common, "trainer.population=1", "hydra.run.dir=alone", cwd=tmp_path,
                       devices=None)
    assert alone.returncode == 0, alone.stderr[-3000:]
    summary = lambda d: json.loads((tmp_path / d / "summary.json").read_text())  # noqa: E731
    summaries = [summary(f"sweep/{i}") for i in range(4)]
    assert [s["devices"] for s in summaries] == [2, 1, 1, 2]
    assert summary("alone")["devices"] == 1
    assert summaries[1]["digest"] == summary("alone")["digest"]


def test_population_cpu_devices_against_a_count_already_set_is_one_clear_error(tiny):
    """population.cpu_devices=N when JAX's CPU device count is already set (here the tests'
    XLA_FLAGS: 8): one line that says so, before anything compiles; the same count is accepted."""
    from gaxp.members import spread_over_cores

    with pytest.raises(ConfigError, match=r"population.cpu_devices=3 but JAX already has 8 CPU "
                                          r"devices \(set by XLA_FLAGS"):
        train(tiny(*TOY, "trainer.population=3", "population.cpu_devices=3"))
    assert spread_over_cores(load(tiny(*TOY, "trainer.population=8", "population.cpu_devices=8")), False) is None


def test_multirun_of_populations_compares_members_as_seeds(tmp_path):
    """`gaxp-train -m loss=ns,hinge trainer.population=2`: two population jobs; scripts/compare.py
    reads each member as a run with its own seed."""
    import subprocess
    import sys

    from test_cli import gaxp_train

    result = gaxp_train("-m", *TOY, "loss=ns,hinge", "trainer.population=2", "trainer.steps=5",
                        "trainer.log_every=1", "logger=none", "trainer.progress=false",
                        "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    from test_sweeps import COMPARE

    out = tmp_path / "cmp"
    run = subprocess.run([sys.executable, str(COMPARE), str(tmp_path / "sweep"), "--metrics",
                          "train/g_loss", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    dump = json.loads((out / "compare.json").read_text())
    assert sorted(dump["variants"]) == ["loss=hinge", "loss=ns"]
    for loss, job in (("ns", "0"), ("hinge", "1")):
        v = dump["variants"][f"loss={loss}"]
        assert sorted(v["seeds"]) == ["0", "1"]
        finals = [[json.loads(x) for x in open(tmp_path / "sweep" / job / "members" / f"0{i}" / "metrics.jsonl")][-1]["train/g_loss"]
                  for i in range(2)]
        np.testing.assert_allclose(v["train/g_loss"]["final"]["mean"], np.mean(finals), rtol=1e-9)


def test_conditional_population_equals_separate_runs(tiny):
    """A population of class-conditional GANs (projection D, labels from the labeled ring) reads
    the class count from the data and gets each member's labels, as separate runs do."""
    common = (*TOY, "model.cond=projection", "data.labeled=true", "trainer.steps=6",
              "trainer.ckpt_every=6", "trainer.log_every=3")
    pop = train(tiny(*common, "trainer.population=2", "population.vary.seed=[1,2]",
                     "trainer.devices=2", name="cpop"))
    for i, seed in enumerate([1, 2]):
        alone = train(tiny(*common, f"trainer.seed={seed}", "trainer.devices=1", name=f"calone{i}"))
        member = _params(pop["members"][i]["dir"])
        _assert_close(member, _params(alone["run_dir"]))
        # the projection embedding has one row per class of the ring (8 modes)
        embeddings = [x for x in jax.tree.leaves(member["d"]) if x.ndim == 2 and x.shape[0] == 8]
        assert embeddings
    assert pop["members"][0]["digest"] != pop["members"][1]["digest"]


def test_population_with_a_gradient_penalty_through_convolutions_trains(tiny, caplog):
    """WGAN-GP differentiates D's input gradient: vmapped (population.unroll=false), the
    member-batched convolutions cannot be traced for it, so the population falls back to lax's
    convolutions, says so, and trains. Unrolled (auto for image models on CPU), each member is
    its own single-run program: the members equal separate runs."""
    import logging

    common = ("loss=wgan_gp", "model.g_width=4", "model.d_width=8", "data.batch_size=8",
              "trainer.steps=2", "trainer.devices=1", "trainer.log_every=1")
    with caplog.at_level(logging.INFO, logger="gaxp"):
        pop = train(tiny(*common, "trainer.population=2", "population.unroll=false", name="vmapped"))
    assert pop["population"] == 2 and len(pop["members"]) == 2
    assert "grouped convolutions" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gaxp"):
        pop = train(tiny(*common, "trainer.population=2", name="unrolled"))
    assert "2 members traced one by one" in caplog.text and "grouped" not in caplog.text
    for i in range(2):
        alone = train(tiny(*common, f"trainer.seed={i}", name=f"alone{i}"))
        _assert_close(_params(pop["members"][i]["dir"]), _params(alone["run_dir"]))


def test_one_by_one_population_is_a_loop_updating_the_members_in_place(tiny):
    """Members one by one (``population.unroll``) is a loop whose body is one member's step: the
    compiled program of 4 members holds as many convolutions as that of 2 (unrolled at trace
    time, 8 DCGANs compiled in 47 s against 5.5 s as a loop). Each member's new state is written
    into its row of the donated stacked state, so XLA's account of its scratch memory holds no
    second copy of that state (stacking the new states needed 0.98 of the state's size here)."""
    import functools
    import re

    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    from gaxp import xla
    from gaxp.population import lower_members
    from gaxp.step import train_step
    from gaxp.training import prepare

    run, batches, _, state, _ = prepare(load(tiny("model=dcgan", "model.g_width=16", "model.d_width=16",
                                                  "data.batch_size=8", "trainer.devices=1")))
    mesh, batch = Mesh(np.array(jax.devices()[:1]), ("data",)), next(batches)
    sh = NamedSharding(mesh, P("data"))

    def compiled(n):
        grow = lambda x: jax.device_put(jnp.broadcast_to(x, (n,) + x.shape), sh)  # noqa: E731
        pop_state, pop_batch = jax.tree.map(grow, state), jax.tree.map(grow, batch)
        keys = jax.device_put(jax.random.split(jax.random.key(0), n), sh)
        hp = jax.device_put({"g_lr_scale": np.ones(n, np.float32), "d_lr_scale": np.ones(n, np.float32)}, sh)
        program = lower_members(functools.partial(train_step, spec=run.spec), mesh, "members", n, True,
                                sh, pop_state, pop_batch, keys, hp).compile(compiler_options=xla.mesh_options(mesh))
        return program, sum(x.nbytes for x in jax.tree.leaves(pop_state))

    (two, _), (four, state_bytes) = compiled(2), compiled(4)
    convolutions = lambda p: len(re.findall(r"= \S+ convolution\(", p.as_text()))  # noqa: E731
    assert convolutions(four) == convolutions(two) > 0
    memory = four.memory_analysis()
    assert memory.alias_size_in_bytes >= 0.99 * state_bytes  # the state is donated...
    assert memory.temp_size_in_bytes < 0.8 * state_bytes  # ...and updated where it lies
