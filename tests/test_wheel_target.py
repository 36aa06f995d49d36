"""scripts/wheel_target.py: markers evaluated for the target Python; the downloaded set checked against the
wheels' own Requires-Dist (tiny real wheels from tests/bats/helpers/make_wheel.py)."""
from pathlib import Path

from testkit import load_module

import pytest

REPO = Path(__file__).resolve().parent.parent
wheel_target = load_module(REPO / "scripts" / "wheel_target.py")
make_wheel = load_module(REPO / "tests" / "bats" / "helpers" / "make_wheel.py").make_wheel


@pytest.fixture
def wheels(tmp_path):
    d = tmp_path / "wheels"
    make_wheel(d, "app", "1.0", requires=('lib[fast]==2.0', 'old==1.0; python_version < "3.12"'))
    make_wheel(d, "lib", "2.0", requires=('speedup==1.0; extra == "fast"', 'new==1.0; python_version >= "3.12"'))
    for name in ("speedup", "old", "new"):
        make_wheel(d, name, "1.0")
    req = tmp_path / "requirements.txt"
    base = tmp_path / "base.txt"
    base.write_text("app==1.0  # the app\n")
    req.write_text('-r base.txt\nextra==3.0; python_version >= "3.14"\n')
    return d, req


def test_resolve_follows_includes_and_drops_markers_false_for_the_target(wheels):
    _, req = wheels
    assert [str(r) for r in wheel_target.resolve("3.12", req)] == ["app==1.0"]
    assert [str(r) for r in wheel_target.resolve("3.14", req)] == ["app==1.0", "extra==3.0"]


def test_check_pins_the_closure_for_the_target_and_removes_the_rest(wheels):
    d, req = wheels
    assert wheel_target.check("3.12", req, d) == ["app==1.0", "lib==2.0", "new==1.0", "speedup==1.0"]
    assert not list(d.glob("old-*.whl"))  # pulled by the build machine's markers only: removed


def test_check_names_a_dependency_the_target_needs_but_was_not_downloaded(wheels):
    d, req = wheels
    next(d.glob("old-*.whl")).unlink()
    with pytest.raises(SystemExit, match=r"Python 3.11: old==1.0; python_version < \"3.12\" \(needed by app 1.0\)"):
        wheel_target.check("3.11", req, d)


def test_check_names_a_wheel_of_the_wrong_version(wheels):
    d, req = wheels
    next(d.glob("lib-*.whl")).unlink()
    make_wheel(d, "lib", "2.1")
    with pytest.raises(SystemExit, match="needed by app 1.0.* but the wheel is lib-2.1-py3-none-any.whl"):
        wheel_target.check("3.12", req, d)
