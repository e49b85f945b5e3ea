"""gaxp.data: toy mixtures, embedded MNIST, TFDS (tfds's own mock), Orbax-checkpointed iterators."""

from collections import Counter
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

from gaxp.data import SOURCES, make_dataset
from gaxp.data.images import BatchOrder, fit_image
from gaxp.errors import ConfigError

MNIST_TEST_DIR = Path(__file__).parents[2] / "shared/data/mnist"
TOYS = ["ring", "grid", "spiral"]


def take(it, n):
    return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def image_counter(x):
    return Counter(im.tobytes() for im in x)


def test_sources_registry_and_unknown_source():
    assert set(SOURCES) == {"toy2d", "mnist", "fashion_mnist", "tfds", "mnist_pairs", "folder",
                            "tfds_domains"}
    with pytest.raises(ConfigError, match="unknown data source 'nope'; valid: fashion_mnist, folder, mnist, "
                                          "mnist_pairs, tfds, tfds_domains, toy2d"):
        make_dataset("nope", "ring")
    with pytest.raises(ConfigError, match="process_index"):
        make_dataset("toy2d", "ring", process_index=2, process_count=2)


# ------------------------------------------------------------------------------------------ toy2d


def test_toy_pacgan_setups():
    ring, grid = make_dataset("toy2d", "ring"), make_dataset("toy2d", "grid")
    assert ring.modes.shape == (8, 2) and ring.sigma == 0.01
    np.testing.assert_allclose(np.linalg.norm(ring.modes, axis=1), 1.0, rtol=1e-6)
    assert grid.modes.shape == (25, 2) and grid.sigma == 0.05
    assert set(grid.modes.ravel().tolist()) == {-4.0, -2.0, 0.0, 2.0, 4.0}
    with pytest.raises(ConfigError, match="unknown toy2d dataset 'moons'; valid: grid, ring, spi"):
        make_dataset("toy2d", "moons")


@pytest.mark.parametrize("name", TOYS)
def test_toy_batches_near_modes_and_cover_all(name):
    ds = make_dataset("toy2d", name, seed=3)
    assert (ds.kind, ds.shape, ds.num_classes, ds.num_examples) == ("points", (2,), None, 100_000)
    batches = take(ds.iterator(512), 8)
    assert all(b.keys() == {"x"} and b["x"].shape == (512, 2) for b in batches)
    assert all(b["x"].dtype == np.float32 for b in batches)
    x = np.concatenate([b["x"] for b in batches])
    dist = np.linalg.norm(x[:, None] - ds.modes[None], axis=-1)
    assert (dist.min(axis=1) < 4 * ds.sigma).mean() > 0.99
    assert set(dist.argmin(axis=1).tolist()) == set(range(len(ds.modes)))


def test_toy_determinism_and_process_shards():
    a = take(make_dataset("toy2d", "grid", seed=1).iterator(64), 3)
    b = take(make_dataset("toy2d", "grid", seed=1).iterator(64), 3)
    assert_batches_equal(a, b)
    other_seed = next(make_dataset("toy2d", "grid", seed=2).iterator(64))
    other_proc = next(make_dataset("toy2d", "grid", seed=1, process_index=1,
                                   process_count=2).iterator(64))
    assert not np.array_equal(a[0]["x"], other_seed["x"])
    assert not np.array_equal(a[0]["x"], other_proc["x"])


def test_toy_resume_from_state():
    ds = make_dataset("toy2d", "ring", seed=5)
    it = ds.iterator(32)
    take(it, 3)
    state = it.get_state()
    expected = take(it, 2)
    resumed = ds.iterator(32)
    resumed.set_state(state)
    assert_batches_equal(take(resumed, 2), expected)


def test_toy_examples_deterministic_per_split():
    ds = make_dataset("toy2d", "spiral")
    a, b = ds.examples(1000), make_dataset("toy2d", "spiral").examples(1000)
    np.testing.assert_array_equal(a["x"], b["x"])
    assert a["x"].shape == (1000, 2) and a["x"].dtype == np.float32
    assert not np.array_equal(a["x"], ds.examples(1000, split="test")["x"])


# ------------------------------------------------------------------------------------------ mnist


def test_mnist_batches_and_labels():
    ds = make_dataset("mnist", "mnist")
    assert (ds.kind, ds.shape, ds.num_classes, ds.num_examples) == ("image", (28, 28, 1), 10, 5000)
    batch = next(ds.iterator(128))
    assert batch["x"].shape == (128, 28, 28, 1) and batch["x"].dtype == np.uint8
    assert batch["y"].shape == (128,) and batch["y"].dtype == np.int32
    assert 0 <= batch["y"].min() and batch["y"].max() <= 9 and batch["x"].max() > 200
    assert np.bincount(ds.examples(5000)["y"]).tolist() == [500] * 10


def test_mnist_image_size_pad_and_resize():
    plain = make_dataset("mnist", "mnist").examples(50)["x"]
    padded = make_dataset("mnist", "mnist", image_size=32)
    assert padded.shape == (32, 32, 1)
    x = padded.examples(50)["x"]
    np.testing.assert_array_equal(x[:, 2:30, 2:30], plain)
    assert x[:, :2].max() == 0 and x[:, -2:].max() == 0 and x[:, :, :2].max() == 0
    small = make_dataset("mnist", "mnist", image_size=14)
    assert small.shape == (14, 14, 1) and next(small.iterator(8))["x"].shape == (8, 14, 14, 1)


def test_fit_image_center_crops_then_resizes():
    image = np.zeros((6, 4, 3), np.uint8)
    image[1:5] = 255  # the centre 4x4 square is white, the top and bottom rows black
    np.testing.assert_array_equal(fit_image(image, 4), np.full((4, 4, 3), 255, np.uint8))
    assert fit_image(image, 2).shape == (2, 2, 3)


def test_mnist_determinism_and_resume():
    ds = make_dataset("mnist", "mnist", seed=7)
    a = take(ds.iterator(64), 3)
    assert_batches_equal(a, take(make_dataset("mnist", "mnist", seed=7).iterator(64), 3))
    other_seed = next(make_dataset("mnist", "mnist", seed=8).iterator(64))
    assert not np.array_equal(a[0]["y"], other_seed["y"])
    it = ds.iterator(64)
    take(it, 80)  # past the first epoch boundary (78.125 batches)
    state = it.get_state()
    expected = take(it, 3)
    resumed = ds.iterator(64)
    resumed.set_state(state)
    assert_batches_equal(take(resumed, 3), expected)


def test_epoch_orders_are_not_shared_across_seeds():
    # grain's own shuffle seeds epoch e with seed + e: seed 0's 2nd epoch == seed 1's 1st epoch.
    first_of_seed1 = BatchOrder(100, 100, seed=1)(0)
    assert not np.array_equal(BatchOrder(100, 100, seed=0)(1), first_of_seed1)
    assert sorted(first_of_seed1.tolist()) == list(range(100))


def test_mnist_epochs_cover_each_example_once_and_reshuffle():
    ds = make_dataset("mnist", "mnist", seed=0)
    batches = take(ds.iterator(500), 20)
    everything = image_counter(ds.examples(5000)["x"])
    epochs = [np.concatenate([b["x"] for b in batches[i:i + 10]]) for i in (0, 10)]
    assert image_counter(epochs[0]) == everything == image_counter(epochs[1])
    assert not np.array_equal(epochs[0], epochs[1])


def test_mnist_process_shards_are_disjoint_and_cover_the_data():
    shards = []
    for p in range(2):
        ds = make_dataset("mnist", "mnist", seed=0, process_index=p, process_count=2)
        shards.append(np.concatenate([b["x"] for b in take(ds.iterator(250), 10)]))
    everything = image_counter(make_dataset("mnist", "mnist").examples(5000)["x"])
    assert len(everything) == 5000  # the 5,000 embedded images are distinct
    assert image_counter(shards[0]) + image_counter(shards[1]) == everything
    assert not image_counter(shards[0]) & image_counter(shards[1])


def test_mnist_bad_batch_size_and_split():
    with pytest.raises(ConfigError, match="batch_size must be in"):
        make_dataset("mnist", "mnist", process_count=2).iterator(2501)
    with pytest.raises(ConfigError, match="unknown mnist split 'val'"):
        make_dataset("mnist", "mnist", split="val")


def test_mnist_test_split_missing_says_where(tmp_path, monkeypatch):
    monkeypatch.delenv("GAXP_MNIST_TEST_DIR", raising=False)
    with pytest.raises(ConfigError, match="t10k-images-idx3-ubyte.gz .*GAXP_MNIST_TEST_DIR"):
        make_dataset("mnist", "mnist", split="test", data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="GAXP_MNIST_TEST_DIR"):
        make_dataset("mnist", "mnist").examples(10, split="test")


@pytest.mark.skipif(not MNIST_TEST_DIR.exists(), reason=f"no MNIST test split at {MNIST_TEST_DIR}")
def test_mnist_test_split_from_idx_files(monkeypatch):
    monkeypatch.setenv("GAXP_MNIST_TEST_DIR", str(MNIST_TEST_DIR))
    ds = make_dataset("mnist", "mnist", split="test")
    assert ds.num_examples == 10_000 and ds.shape == (28, 28, 1)
    counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # from the folder's README
    assert np.bincount(ds.examples(10_000)["y"]).tolist() == counts
    train = make_dataset("mnist", "mnist")
    np.testing.assert_array_equal(train.examples(100, split="test")["x"], ds.examples(100)["x"])


# ------------------------------------------------------------------------------------------- tfds


@pytest.fixture
def mock_tfds():
    with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
        yield


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_labeled_datasets(mock_tfds, tmp_path, name, shape):
    ds = make_dataset("tfds", name, data_dir=str(tmp_path), seed=1)
    assert (ds.kind, ds.shape, ds.num_classes, ds.num_examples) == ("image", shape, 10, 64)
    batches = take(ds.iterator(16), 6)  # 1.5 epochs
    assert batches[0]["x"].shape == (16, *shape) and batches[0]["x"].dtype == np.uint8
    assert batches[0]["y"].dtype == np.int32
    assert image_counter(np.concatenate([b["x"] for b in batches[:4]])) == image_counter(
        ds.examples(64)["x"])
    assert_batches_equal(batches, take(make_dataset("tfds", name, data_dir=str(tmp_path),
                                                    seed=1).iterator(16), 6))
    resized = make_dataset("tfds", name, data_dir=str(tmp_path), image_size=16)
    assert resized.shape == (16, 16, shape[2])
    assert next(resized.iterator(8))["x"].shape == (8, 16, 16, shape[2])


def test_tfds_unlabeled_non_square_celeb_a(mock_tfds, tmp_path):
    raw = make_dataset("tfds", "celeb_a", data_dir=str(tmp_path))
    assert raw.shape == (218, 178, 3) and raw.num_classes is None
    ds = make_dataset("tfds", "celeb_a", data_dir=str(tmp_path), image_size=64)
    batch = next(ds.iterator(4))
    assert batch.keys() == {"x"} and batch["x"].shape == (4, 64, 64, 3)


def test_tfds_not_prepared_gives_prepare_hint(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match=r"tfds build mnist --data_dir .*nowhere") as info:
        make_dataset("tfds", "mnist", data_dir=str(missing))
    assert "\n" not in str(info.value) and "gaxp[prepare]" in str(info.value)
    assert not missing.exists()  # nothing was downloaded or created
    with pytest.raises(ConfigError, match="unknown TFDS dataset 'no_such_dataset'"):
        make_dataset("tfds", "no_such_dataset", data_dir=str(missing))


# ------------------------------------------------------------------------------ Orbax checkpoint


@pytest.mark.parametrize("source,name", [("toy2d", "grid"), ("mnist", "mnist")])
def test_iterator_state_through_orbax(tmp_path, source, name):
    ds = make_dataset(source, name, seed=11)
    it = ds.iterator(32)
    take(it, 5)
    state = {"step": jnp.asarray(5), "w": jnp.arange(4.0)}
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        mngr.save(5, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             data=grain.checkpoint.CheckpointSave(it)))
        mngr.wait_until_finished()
    expected = take(it, 3)

    fresh = ds.iterator(32)
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        restored = mngr.restore(mngr.latest_step(), args=ocp.args.Composite(
            state=ocp.args.StandardRestore(jax.eval_shape(lambda: state)),
            data=grain.checkpoint.CheckpointRestore(fresh)))
    np.testing.assert_array_equal(restored.state["w"], state["w"])
    assert restored.data is fresh
    assert_batches_equal(take(fresh, 3), expected)
