"""``Option`` and ``OptionTable``: one row per user-facing option (its name, type, default, range, help, who shows
it), from which the node widgets, the CLI arguments, the settings' defaults and validation and the reference docs
are derived.

A row's ``name`` is the same everywhere: the node widget, the ``GenerationSettings`` / ``LoaderSettings`` field and,
in ``--kebab-case``, the CLI option. ``check`` turns a value into the option's type or raises ``OptionError`` naming
the option and what it accepts. This module knows nothing of the options themselves: the tables live beside the
settings they validate (``sampling/options.py``, ``runtime/options.py``) and the front-end tables in
``option_tables.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

KINDS = ("int", "float", "bool", "choice", "text", "seed")
FRONTS = ("node", "cli", "api")
LEVELS = ("basic", "expert")
MAX_SEED = 2 ** 64 - 1              # seeds are unsigned 64-bit integers (ComfyUI's seed widget range)
AUTO = "auto"


class OptionError(ValueError):
    """A value an option does not accept; ``option`` is the option's name, the message says what it accepts."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class Option:
    """One user-facing option.

    kind: int | float | bool | choice | text | seed. minimum / maximum: the inclusive range (None = unbounded);
    step: the widget's increment. choices: the accepted words of a ``choice``. auto: the word "auto" is accepted
    besides a number (resolved by the settings that use it). rule: an extra test of a valid value, returning the
    reason it is refused (or None); rule_text: how the docs state it. fronts: where it is shown (node, cli, api).
    level: "basic" (what an artist changes every time) or "expert". zero: what 0 means, when it means something
    (e.g. "every pose frame"). multiline: a text box rather than a line. unit: shown after numbers in the docs
    (e.g. "px"). (An old CLI spelling of a renamed option is ``cli_options.DEPRECATED_FLAGS``'.)
    """

    name: str
    kind: str
    default: Any
    help: str
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    step: Optional[float] = None
    choices: tuple = ()
    auto: bool = False
    rule: Optional[Callable[[Any], Optional[str]]] = field(default=None, compare=False, repr=False)
    rule_text: str = ""
    fronts: tuple = FRONTS
    level: str = "expert"
    zero: str = ""
    multiline: bool = False
    unit: str = ""

    def __post_init__(self):
        if not self.name.isidentifier() or self.name != self.name.lower():
            raise ValueError(f"option name must be a snake_case identifier, got {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.level not in LEVELS or not set(self.fronts) <= set(FRONTS) or not self.fronts:
            raise ValueError(f"option {self.name}: level must be one of {LEVELS} and fronts a subset of {FRONTS}")
        if (self.kind == "choice") != bool(self.choices):
            raise ValueError(f"option {self.name}: choices are given exactly for kind 'choice'")
        if self.kind == "seed":
            object.__setattr__(self, "minimum", 0 if self.minimum is None else self.minimum)
            object.__setattr__(self, "maximum", MAX_SEED if self.maximum is None else self.maximum)
        self.check(self.default)                    # the default is a valid value

    @property
    def flag(self) -> str:
        """The CLI option: ``--kebab-case`` of the name."""
        return "--" + self.name.replace("_", "-")

    def range_text(self) -> str:
        """What the option accepts, in words (for errors, ``--help`` and the docs)."""
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "bool":
            return "true or false"
        if self.kind == "text":
            return self.rule_text or "text"
        what = "an integer" if self.kind in ("int", "seed") else "a number"
        if self.kind == "seed":
            bounds = "from 0 to 2**64-1"
        elif self.minimum is not None and self.maximum is not None:
            bounds = f"from {_fmt(self.minimum)} to {_fmt(self.maximum)}"
        elif self.minimum is not None:
            bounds = f">= {_fmt(self.minimum)}"
        elif self.maximum is not None:
            bounds = f"<= {_fmt(self.maximum)}"
        else:
            bounds = ""
        text = " ".join(filter(None, [what, bounds, self.rule_text]))
        return text + (" or auto" if self.auto else "")

    def check(self, value):
        """``value`` converted to the option's type (int for int / seed, float for float, ...); ``OptionError``
        naming the option when it is not accepted. Strings are parsed for the numeric kinds (the CLI's input)."""
        checked = self._convert(value)
        if self.rule is not None and not (self.auto and checked == AUTO):
            reason = self.rule(checked)
            if reason:
                raise OptionError(self.name, f"{self.name} {reason}, got {_shown(value, self.kind)}")
        return checked

    def _refuse(self, value) -> OptionError:
        return OptionError(self.name, f"{self.name} must be {self.range_text()}, got {_shown(value, self.kind)}")

    def _convert(self, value):
        if self.auto and isinstance(value, str) and value.strip().lower() == AUTO:
            return AUTO
        if self.kind == "text":
            if not isinstance(value, str):
                raise self._refuse(value)
            return value
        if self.kind == "choice":
            if not isinstance(value, str) or value not in self.choices:
                raise self._refuse(value)
            return value
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no", "on",
                                                                      "off"):
                return value.strip().lower() in ("true", "1", "yes", "on")
            raise self._refuse(value)
        number = _parse_number(value, integer=self.kind in ("int", "seed"))
        if number is None:
            raise self._refuse(value)
        if (self.minimum is not None and number < self.minimum) or \
                (self.maximum is not None and number > self.maximum):
            raise self._refuse(value)
        return number


def _shown(value, kind: str) -> str:
    """A refused value as the message shows it: a number typed as text without quotes, anything else as repr."""
    if isinstance(value, str) and kind in ("int", "float", "seed") and len(value) <= 40:
        return value.strip() or repr(value)
    return repr(value)


def _parse_number(value, integer: bool):
    """int / float of ``value`` (a number or its text), or None when it is not one (bools, NaN, inf, 1.5 for an
    integer option)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            return None
    if integer:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _fmt(number) -> str:
    if isinstance(number, float) and number.is_integer():
        number = int(number)
    if isinstance(number, int) and number >= 4096 and math.isqrt(number) ** 2 == number:
        return f"{number} ({math.isqrt(number)}*{math.isqrt(number)})"
    return f"{number:g}" if isinstance(number, float) else str(number)


class OptionTable:
    """The options of one front-end unit (a node and its CLI group), in display order."""

    def __init__(self, title: str, rows):
        self.title = title
        self.rows = tuple(rows)
        names = [r.name for r in self.rows]
        if len(set(names)) != len(names):
            raise ValueError(f"{title}: option names must be unique, got {names}")
        self._by_name = {r.name: r for r in self.rows}

    def __iter__(self) -> Iterator[Option]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, name) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> Option:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"{self.title} has no option {name!r}; known: {', '.join(self._by_name)}") from None

    @property
    def names(self) -> tuple:
        return tuple(self._by_name)

    def default(self, name: str):
        return self[name].default

    def defaults(self, front: str | None = None) -> dict:
        """{name: default} of every row (shown on ``front`` when given)."""
        return {r.name: r.default for r in self.rows if front is None or front in r.fronts}

    def shown(self, front: str, level: str | None = None) -> tuple:
        """The rows shown on ``front`` (node | cli | api), of ``level`` when given."""
        return tuple(r for r in self.rows if front in r.fronts and (level is None or r.level == level))

    def check_all(self, values: dict) -> dict:
        """Every value checked by its row (unknown names refused, naming the known ones)."""
        unknown = sorted(set(values) - set(self._by_name))
        if unknown:
            raise TypeError(f"{self.title}: unknown options {unknown}; known: {', '.join(self._by_name)}")
        return {name: self._by_name[name].check(value) for name, value in values.items()}

    def plus(self, title: str, *tables: "OptionTable") -> "OptionTable":
        """A table of these rows followed by the rows of ``tables`` (for a node that shows several groups)."""
        return OptionTable(title, self.rows + tuple(r for t in tables for r in t.rows))
