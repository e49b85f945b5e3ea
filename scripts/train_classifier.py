"""Train the domain classifier used by the small-image metrics (fd_<name>, is_<name>, ...).

    python scripts/train_classifier.py data=mnist [steps=500 max_rounds=3 batch_size=128 lr=3e-3
        seed=0 name=<name> cache_dir=<dir> data.image_size=32 data.data_dir=<dir>]

Saves ``<cache>/classifiers/<name>/<H>x<W>x<C>-v2/`` (Orbax parameters + meta.json with its
format, accuracy and SHA-256), one per image size; ``<cache>`` is cache_dir, else $GAXP_CACHE,
else ~/.cache/gaxp. gaxp finds it by name and image size afterwards. Trains in rounds of ``steps``
until the accuracy, measured on the test split when it can be read, else on a stratified held-out
10% of train, reaches 97% (at most ``max_rounds``); under 97% the classifier is refused and the
cache is left as it was. The metrics train the MNIST classifier themselves on first use (and again
when the cached one does not fit: ``gaxp.metrics.classifier.obtain``); this script trains ahead of
time.
"""

from __future__ import annotations

import sys

OPTIONS = {"steps": int, "max_rounds": int, "batch_size": int, "lr": float, "seed": int,
           "name": str, "cache_dir": str}


def main(argv: list[str]) -> None:
    from gaxp.compose import fail, parse_options, run_config
    from gaxp.errors import ConfigError
    from gaxp.metrics.classifier import train_and_save

    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    try:
        options, overrides = parse_options(argv, OPTIONS, passthrough=("data",))
        config = run_config(overrides)
        train_and_save(config.data, **options)
    except ConfigError as e:
        fail("train_classifier", str(e))


if __name__ == "__main__":
    main(sys.argv[1:])
