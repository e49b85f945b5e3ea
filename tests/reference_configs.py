"""The reference configs whose parameter digests must stay bit-identical across refactors
(issue "Open gaxp to its researchers"): one per task and family, each a few real train steps.

``python tests/reference_configs.py`` records their digests in ``tests/data/reference_digests.json``
under this CPU's fingerprint (the digests are bit-exact on one machine kind; another CPU may round
differently). ``tests/test_reference_digests.py`` compares against the recorded ones.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path

DIGESTS = Path(__file__).resolve().parent / "data" / "reference_digests.json"
SMALL = ("trainer.log_every=1", "trainer.sample_every=100", "trainer.ckpt_every=100", "metrics=none",
         "trainer.progress=false", "logger=none")
REFERENCE = {
    "dcgan": ("trainer.steps=3", "data.batch_size=16"),
    "toy_ring": ("experiment=toy_ring", "trainer.steps=3", "data.batch_size=64"),
    "progan": ("experiment=progan_mnist", "data.batch_size=16", "trainer.steps=6",
               "model.grow.fade_kimg=0.032", "model.grow.stable_kimg=0.016"),
    "cgan": ("experiment=cgan_mnist", "trainer.steps=3", "data.batch_size=16"),
    "pix2pix": ("experiment=pix2pix_mnist_edges", "trainer.steps=3", "data.batch_size=8"),
    "cyclegan": ("experiment=cyclegan_mnist", "trainer.steps=3", "data.batch_size=8",
                 "task.pool_size=4"),
    "srgan": ("experiment=srgan_mnist", "trainer.steps=3", "data.batch_size=8",
              "task.pretrain_steps=1"),
    "population": ("model=mlp", "data=ring", "trainer.steps=3", "trainer.population=3",
                   "population.vary.g_lr=[1e-4,2e-4,4e-4]", "data.batch_size=32"),
}


def fingerprint() -> str:
    """The CPU the digests were computed on: model name, ISA extensions that change kernels."""
    model, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    isa = sorted(f for f in flags if f.startswith(("avx", "fma", "amx")))
    return hashlib.sha256(f"{model}|{' '.join(isa)}".encode()).hexdigest()[:12] + f" ({model})"


def digest(name: str, root: Path) -> str:
    """Train the reference config ``name`` in ``root/name`` and return the digest of G and D (a
    population: the members' digests joined)."""
    import gaxp

    summary = gaxp.train([*SMALL, *REFERENCE[name], f"hydra.run.dir={root / name}",
                          f"runs_root={root}"])
    if "members" in summary:
        return ",".join(m["digest"] for m in summary["members"])
    return summary["digest"]


def recorded() -> dict:
    return json.loads(DIGESTS.read_text()).get(fingerprint(), {}) if DIGESTS.exists() else {}


def main() -> None:
    import tempfile

    import conftest  # noqa: F401 - the tests' JAX setup (8 virtual CPU devices), before JAX starts

    names = sys.argv[1:] or list(REFERENCE)
    table = json.loads(DIGESTS.read_text()) if DIGESTS.exists() else {}
    mine = table.setdefault(fingerprint(), {})
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            mine[name] = digest(name, Path(tmp))
            print(name, mine[name][:16], flush=True)
    DIGESTS.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
