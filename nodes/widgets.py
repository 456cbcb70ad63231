"""Node widgets built from the option tables: each row becomes ComfyUI's ``(type, options)`` input with the row's
default, range, step and help as tooltip, so a widget can never disagree with the CLI or ``GenerationSettings``."""
from __future__ import annotations

from ..steadydancer_core import Option, OptionTable


def widget(row: Option, **extra) -> tuple:
    """ComfyUI's input declaration of one option row (``extra`` adds or overrides widget options)."""
    tooltip = row.help + (f" (0 = {row.zero})" if row.zero and "0 =" not in row.help else "")
    options = {"default": row.default, "tooltip": tooltip}
    if row.kind == "choice":
        kind = list(row.choices)
    elif row.kind == "bool":
        kind = "BOOLEAN"
    elif row.kind == "text":
        kind = "STRING"
        if row.multiline:
            options["multiline"] = True
    else:
        kind = "FLOAT" if row.kind == "float" else "INT"
        options.update({"min": row.minimum, "max": row.maximum})
        if row.step is not None:
            options["step"] = row.step
        if row.kind == "float":
            options["round"] = min(0.01, row.step or 0.01)
        if row.kind == "seed":
            options["control_after_generate"] = True
    options.update(extra)
    return (kind, options)


def widgets(table: OptionTable, level: str | None = None, **extra) -> dict:
    """{name: input declaration} of the rows of ``table`` shown on nodes (of ``level`` when given), in order;
    ``extra``: per-name overrides of widget options."""
    return {row.name: widget(row, **extra.get(row.name, {})) for row in table.shown("node", level)}
