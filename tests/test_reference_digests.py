"""The parameter digests of the reference configs (DCGAN, toy ring, ProGAN, cGAN, Pix2Pix,
CycleGAN, SRGAN and a 3-member population) stay bit-identical across refactors: they were recorded
before the registry redesign (tests/reference_configs.py) and every run here must reproduce them."""

import pytest

import reference_configs as R


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(R.REFERENCE))
def test_reference_config_digest_is_unchanged(name, tmp_path):
    recorded = R.recorded()
    if name not in recorded:
        pytest.skip(f"no digest recorded for this CPU {R.fingerprint()}: the digests are bit-exact "
                    "per machine kind; record them with python tests/reference_configs.py")
    assert R.digest(name, tmp_path) == recorded[name]
