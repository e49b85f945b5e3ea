"""docs/extending.md's table of decorators says exactly what the code's signatures are: every
``gaxp.register`` decorator has one row, and its parameters and defaults are the code's."""

import inspect
import re
from pathlib import Path

from gaxp.registry import register

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def rendered(kind: str) -> str:
    """``register.<kind>(a, b=default, ...)`` from the code (keyword-only marker left out)."""
    params = inspect.signature(getattr(register, kind)).parameters.values()
    parts = [p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
             for p in params]
    return f"register.{kind}({', '.join(parts)})".replace("'", '"')


def documented() -> dict:
    rows = re.findall(r"^\| `(register\.(\w+)\(.*?\))` \|", DOC.read_text(), flags=re.M)
    return {kind: text for text, kind in rows}


def test_every_decorator_has_one_row_with_the_code_s_signature():
    kinds = sorted(k for k in vars(type(register)) if not k.startswith("_"))
    assert sorted(documented()) == kinds
    for kind in kinds:
        assert documented()[kind] == rendered(kind), kind


def test_arch_check_is_optional_and_accepts_every_shape():
    from gaxp.config import check_for_data
    from gaxp.registry import ARCHS

    assert inspect.signature(register.arch).parameters["check"].default is None
    register.arch("test_any_shape")(lambda spec, shape, image, rngs: None)
    try:
        import dataclasses

        from conftest import compose
        from gaxp.config import load

        cfg = load(compose("model=mlp", "data=ring"))
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name="test_any_shape"))
        check_for_data(cfg, (13, 7, 2), True)  # no check: any shape passes
        check_for_data(cfg, (2,), False)
    finally:
        del ARCHS["test_any_shape"]
