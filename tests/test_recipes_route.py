"""GET /recipes against the catalogue contract (the shape the page and the client build their choices on), on a
pack with the vocals models and the default cinematic checkpoint only: what it cannot make is marked, with why."""
from __future__ import annotations

import httpx
import pytest

from testkit.service import Server

TYPES = {"bool", "int", "float", "choice"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from testkit import toypack
    pack = toypack.build_pack(tmp_path_factory.mktemp("film_pack"), kind="random", stems="vocals")
    toypack.build_cinematic(pack, files=(toypack.CINEMATIC_FILES[1],))
    srv = Server(tmp_path_factory.mktemp("recipes") / "data", pack, SPARK_MAX_UPLOAD_MB=64,
                 SPARK_MAX_DURATION_S=3600).start()
    yield srv
    srv.stop()


def test_the_catalogue_follows_the_contract_and_the_pack(server):
    assert httpx.get(server.base + "/recipes").status_code == 401  # token-protected like /status
    with server.client() as c:
        cat = c.get("/recipes").json()
        status = c.get("/status").json()
    recipes = {r["name"]: r for r in cat["recipes"]}
    assert {"mdx23", "cinematic"} <= set(recipes)
    assert sorted(n for n, r in recipes.items() if r["available"]) == sorted(status["pack"]["recipes"])
    for r in cat["recipes"]:
        assert set(r) >= {"name", "summary", "stems", "default_stems", "options", "available", "missing"}
        assert set(r["default_stems"]) <= {s["name"] for s in r["stems"]}
        for s in r["stems"]:
            assert set(s) >= {"name", "summary", "available", "reason"}
            assert (s["reason"] is None) == s["available"], s  # an unavailable stem says why
    for o in cat["options"] + [o for r in cat["recipes"] for o in r["options"]]:
        assert o["type"] in TYPES and "default" in o and "help" in o
        if o["type"] == "choice":
            assert o["default"] in o["choices"]
    mdx = {s["name"]: s for s in recipes["mdx23"]["stems"]}
    assert mdx["vocals"]["available"] and mdx["instrumental"]["available"]
    for stem in ("drums", "bass", "other"):
        assert not mdx[stem]["available"] and "lacks" in mdx[stem]["reason"]
    assert all(s["available"] for s in recipes["cinematic"]["stems"])
    assert "high_quality" in {o["name"] for o in recipes["cinematic"]["options"]}
    assert {"format", "sample_rate", "mono", "layout"} <= {o["name"] for o in cat["options"]}
    assert cat["limits"] == {"max_upload_bytes": 64 * 2**20, "max_duration_s": 3600}
