"""The recipe registry, `Options` and the one translator, without models: defaults written once, frozen options,
consistent option definitions across recipes, SPARK_RECIPES parsing, strict (HTTP) vs clamped (CLI) ranges."""
import copy
import pickle

import pytest

from mvsep import Options, recipes, translate
from mvsep.errors import OptionError
from mvsep.recipes import Option, Recipe, Stem
from service.config import Config


def test_options_take_their_defaults_from_the_registry():
    opts = Options()
    for key, opt in recipes.option_table().items():
        assert getattr(opts, key) == opt.default, key
    assert opts.recipe == "mdx23" and Options(only_vocals=True).stems == ("vocals", "instrumental")
    assert Options().stems[-1] == "instrumental2"
    assert Options(recipe="cinematic").stems == ("dialog", "music", "effects", "background", "background2")
    with pytest.raises(TypeError, match="bogus"):
        Options(bogus=1)


def test_options_are_frozen_comparable_and_copyable():
    opts = Options(recipe="cinematic", high_quality=True, output_format="flac")
    with pytest.raises(AttributeError):
        opts.shifts = 3
    assert copy.deepcopy(opts) == opts and pickle.loads(pickle.dumps(opts)) == opts
    assert hash(copy.copy(opts)) == hash(opts)
    other = opts.replace(shifts=0)
    assert other.shifts == 0 and opts.shifts == 1 and other != opts


def test_validate_clamps_overlaps_and_names_the_field():
    assert Options(overlap_large=1.5, overlap_small=-1).validate().overlap_large == 0.99
    assert Options(sample_rate="44100").validate().sample_rate == 44100
    for field, value in (("shifts", 11), ("chunk_size", 10), ("seed", -1), ("output_format", "ogg"),
                         ("layout", "5.1"), ("precision", "bf17")):
        with pytest.raises(OptionError) as e:
            Options(**{field: value}).validate()
        assert e.value.field == field
    with pytest.raises(OptionError) as e:
        Options(recipe="nope").validate()
    assert e.value.field == "recipe" and "mdx23" in str(e.value)


def test_translator_strict_for_requests_clamped_for_the_cli():
    with pytest.raises(OptionError) as e:
        translate({"overlap_large": 1.2})
    assert e.value.field == "overlap_large"
    opts, stems = translate({"overlap_large": 1.2}, strict=False, default_stems=False)
    assert opts.overlap_large == 0.99 and stems is None
    opts, stems = translate({"stems": "instrumental2", "format": "wav24", "mono": "true"})
    assert stems == ["instrumental2"] and not opts.only_vocals and opts.output_format == "wav24" and opts.mono
    opts, stems = translate({"stems": "all"})
    assert stems == ["vocals", "instrumental", "drums", "bass", "other"]
    opts, stems = translate({})
    assert stems == ["vocals", "instrumental"] and opts.only_vocals
    for bad in ({"stems": "vocals,guitar"}, {"recipe": "cinematic", "stems": "vocals"}, {"mono": "maybe"},
                {"shifts": "2.5"}, {"overlap_large": "nan"}, {"colour": "red"}, {"format": ["wav"]}):
        with pytest.raises(OptionError):
            translate(bad)


class _Clash(Recipe):
    name = "clash"
    stems = (Stem("a", "a"),)
    default_stems = ("a",)
    options = (Option("shifts", "int", 3, "another default for a shared name", min=0, max=10),)


def test_registry_refuses_a_conflicting_option_and_bad_declarations():
    with pytest.raises(ValueError, match="shifts"):
        recipes.register(_Clash())
    assert "clash" not in recipes.names()

    class NoResidualSource(_Clash):
        options = ()
        residuals = {"a": "b"}
    with pytest.raises(ValueError, match="residuals"):
        recipes.register(NoResidualSource())
    other_cinematic = type("OtherCinematic", (type(recipes.get("cinematic")),), {})
    with pytest.raises(ValueError, match="registered already"):
        recipes.register(other_cinematic())
    assert recipes.register(type(recipes.get("cinematic"))) is recipes.get("cinematic")  # the same, twice: fine


def test_spark_recipes_is_parsed_once_by_the_engine():
    assert recipes.plugin_modules(" a.b , c ,") == ("a.b", "c")
    with pytest.raises(ValueError):
        recipes.plugin_modules("a-b")
    assert Config.from_env({"SPARK_RECIPES": "x,y.z"}).recipes == ("x", "y.z")
    with pytest.raises(SystemExit):
        Config.from_env({"SPARK_RECIPES": "not a module"})
    cfg = Config.from_env({"SPARK_DEMO_PACK": "off", "SPARK_MODELS_DIR": "/m", "PORT": "9"})
    assert (cfg.demo_pack, cfg.models_dir, cfg.port, cfg.queue_size) == (False, "/m", 9, Config.queue_size)
    with pytest.raises(SystemExit, match="PORT"):
        Config.from_env({"PORT": "x"})
