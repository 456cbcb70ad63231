"""The option tables: each row checks its values and names itself in errors, and the settings, the node widgets and
the CLI arguments are all derived from the rows (same names, defaults and ranges)."""
from __future__ import annotations

import math
import sys

import pytest

from conftest import REPO_ROOT
from steadydancer_core import LOADER, SAMPLER, VAE_TILING, GenerationSettings, LoaderSettings, Option, OptionError
from steadydancer_core.cli_options import build_parser
from steadydancer_core.option_tables import TABLES


def test_a_row_checks_kind_range_and_rule():
    row = Option("frames", "int", 9, minimum=5, maximum=81, rule=lambda v: None if v % 4 == 1 else "must be 4n+1",
                 help="h")
    assert row.check(13) == 13 and row.check("17") == 17 and row.check(21.0) == 21
    for bad, message in ((3, "from 5 to 81"), (85, "from 5 to 81"), (10, r"must be 4n\+1"), (1.5, "an integer"),
                         (True, "an integer"), ("x", "an integer"), (math.nan, "an integer")):
        with pytest.raises(OptionError, match=message) as err:
            row.check(bad)
        assert err.value.option == "frames" and str(err.value).startswith("frames ")
    shift = Option("shift", "float", 5.0, minimum=0.1, auto=True, help="h")
    assert shift.check("auto") == "auto" and shift.check(" AUTO ") == "auto" and shift.check("3") == 3.0
    for bad in (math.inf, math.nan, "high", 0.0):
        with pytest.raises(OptionError, match=r"^shift must be a number >= 0.1 or auto, got "):
            shift.check(bad)
    with pytest.raises(ValueError, match="must be one of"):
        Option("x", "choice", "c", choices=("a", "b"), help="h")       # the default is checked too


def test_the_settings_are_the_tables():
    rows = SAMPLER.plus("both", VAE_TILING)
    assert GenerationSettings.option_fields() == rows.names
    assert {name: getattr(GenerationSettings(), name) for name in rows.names} == rows.defaults()
    assert LoaderSettings.option_fields() == LOADER.names
    assert {name: getattr(LoaderSettings(), name) for name in LOADER.names} == LOADER.defaults()
    with pytest.raises(OptionError, match="^steps must be an integer from 1 to 1000, got 0$"):
        GenerationSettings(steps=0)


def test_unified_defaults():
    """What a newcomer gets on every path: the photo as frame 0, one 81-frame clip, the official example's seed."""
    settings = GenerationSettings()
    assert (settings.first_frame, settings.length, settings.seed) == ("exact", 81, 106060)
    assert settings.prompt == SAMPLER.default("prompt") != ""


def test_every_cli_option_is_a_row_with_its_default_and_range():
    parser = build_parser()
    actions = {a.dest: a for a in parser._actions}
    for table in TABLES:
        for row in table.shown("cli"):
            action = actions[row.name]
            assert row.flag in action.option_strings and action.default == row.default, row.name
            assert f"default: {row.default if row.default != '' else chr(34) * 2}" in action.help, row.name
            if row.kind == "choice":
                assert tuple(action.choices) == row.choices
        for row in table.rows:
            if "cli" not in row.fronts:
                assert row.name not in actions, f"{row.name} is not a CLI option"


def test_every_node_widget_with_a_row_is_that_row(tmp_path):
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    import comfy_standin

    comfy_standin.install(tmp_path)
    try:
        pack = comfy_standin.load_pack()
        from steadydancer_pack_under_test.nodes.widgets import widget
    finally:
        comfy_standin.uninstall()
    rows = {row.name: row for table in TABLES for row in table}
    seen = set()
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        for section in ("required", "optional"):
            for input_name, entry in cls.INPUT_TYPES().get(section, {}).items():
                if input_name not in rows:
                    continue
                expected = widget(rows[input_name])
                assert entry[0] == expected[0], f"{name}.{input_name}"
                for key in ("default", "min", "max", "step"):
                    assert entry[1].get(key) == expected[1].get(key), f"{name}.{input_name} {key}"
                seen.add(input_name)
    shown = {row.name for table in TABLES for row in table if "node" in row.fronts}
    assert shown <= seen, f"rows meant for a node but on none: {sorted(shown - seen)}"
