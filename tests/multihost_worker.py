"""One process of the multi-process tests (tests/test_multihost.py): compose the real config from
the command-line overrides, train, print the summary as one JSON line on stdout.

    python tests/multihost_worker.py [--dump params.npz] [--emulate-pair] override ...

``--emulate-pair``: one process whose global batch is built the way two processes build theirs
(process 0's rows, then process 1's), so its run is comparable with a real 2-process run."""

import json
import sys
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[1] / "gaxp" / "conf"


class _PairIterator:
    def __init__(self, parts):
        self.parts = parts

    def __iter__(self):
        return self

    def __next__(self):
        import numpy as np

        rows = [next(p) for p in self.parts]
        return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}

    def get_state(self):  # bytes: grain's checkpoint handler then stores it as text
        return json.dumps([p.get_state() for p in self.parts]).encode()

    def set_state(self, state):
        for p, s in zip(self.parts, json.loads(state)):
            p.set_state(s)


class _PairDataset:
    """A dataset seen as the two shards of a 2-process run, concatenated."""

    def __init__(self, make, *args, **kwargs):
        kwargs.update(process_count=2)
        self.parts = [make(*args, **{**kwargs, "process_index": i}) for i in (0, 1)]

    def __getattr__(self, name):
        return getattr(self.parts[0], name)

    def iterator(self, batch_size):
        return _PairIterator([p.iterator(batch_size // 2) for p in self.parts])


def main(argv):
    from hydra import compose, initialize_config_dir

    import gaxp.api
    import gaxp.run
    import gaxp.training

    if argv and argv[0] == "--dump":  # the final G and D parameters, as flat arrays
        dump, argv = argv[1], argv[2:]
        digest = gaxp.training.param_digest

        def capture(state):
            import jax
            import numpy as np

            leaves = jax.tree_util.tree_flatten_with_path(
                jax.device_get({"g": state.g_params, "d": state.d_params}))[0]
            np.savez(dump, **{jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves})
            return digest(state)

        gaxp.training.param_digest = capture
    if argv and argv[0] == "--emulate-pair":
        argv = argv[1:]
        make = gaxp.run.make_dataset
        gaxp.run.make_dataset = lambda *a, **k: _PairDataset(make, *a, **k)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=list(argv))
    summary = gaxp.api.run(cfg)
    import jax

    summary.update(process_index=jax.process_index(), process_count=jax.process_count(),
                   devices=jax.device_count(), gaxp=gaxp.__file__)
    print(json.dumps(summary, default=str), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
