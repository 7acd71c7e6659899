"""The table's cells and layout (make table): a value as a csv cell and as a .txt cell, a
column's width and alignment, and how an old .txt line is moved to new widths without being
made again. A column is numeric (right-aligned, summarised) where it has a number and nothing
but numbers. Standard library only.
"""
from array import array

from rows import row_values


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def csv_cell(value):
    if value is None or (isinstance(value, float) and value != value):
        return ""
    text = repr(value) if isinstance(value, float) else str(value)
    if "," in text or '"' in text or "\n" in text or "\r" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def txt_cell(value):
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return format(value, ".6g")
    return str(value).replace("\n", "\\n").replace("\r", "\\r").replace("\0", "\\0")


def render_row(experiment, row, keys):
    """A row's .txt cells (joined by NUL), csv line, cells' lengths (array bytes) and kinds:
    csv_cell, txt_cell and kind of each value, the usual types (a table has 100,000 rows) by
    hand."""
    csv_cells, txt_cells, kinds = [csv_cell(experiment)], [experiment], ["s"]
    for value in row_values(row, keys):
        kind_of = type(value)
        if kind_of is float and value == value:
            csv_cells.append(repr(value))
            txt_cells.append(format(value, ".6g"))
            kinds.append("n")
        elif kind_of is int or kind_of is float:  # a NaN is a number without a cell
            text = str(value) if kind_of is int else ""
            csv_cells.append(text)
            txt_cells.append(text)
            kinds.append("n")
        elif value is None:
            csv_cells.append("")
            txt_cells.append("")
            kinds.append("-")
        else:
            csv_cells.append(csv_cell(value))
            txt_cells.append(txt_cell(value))
            kinds.append(kind(value))
    return ("\0".join(txt_cells), (",".join(csv_cells) + "\n").encode(), array("I", map(len, txt_cells)).tobytes(),
            "".join(kinds))


def kind(value):
    """n: a number, -: nothing, s: anything else (a column with an s is not numeric)."""
    return "-" if value is None else "n" if is_number(value) else "s"


def txt_line(cells, layout):
    widths, numeric = layout
    return "  ".join(c.rjust(w) if right else c.ljust(w) for c, w, right in zip(cells, widths, numeric)).rstrip() + "\n"


def relayout_plan(old, new):
    """How a .txt line written under layout `old` becomes one under `new`, where only widths
    changed: (offset, spaces to insert there, or to remove where negative) for each column
    whose width changed, rightmost first, so that each offset is still true when it is used.
    A left-aligned cell's padding changes after it, a right-aligned one's before it; the
    spaces removed are padding, since every cell fits its new width."""
    (old_widths, numeric), (new_widths, _) = old, new
    plan, start = [], 0
    for old_width, new_width, right in zip(old_widths, new_widths, numeric):
        if new_width != old_width:
            plan.append((start if right else start + min(old_width, new_width), new_width - old_width))
        start += old_width + 2
    return plan[::-1]


def relayout(line, plan):
    """Apply relayout_plan's `plan` to one line (ASCII bytes, its newline at the end): an offset
    at or past the line's end is trailing padding, which rstrip took away."""
    for at, change in plan:
        if at < len(line) - 1:
            line = line[:at] + b" " * change + line[at:] if change > 0 else line[:at] + line[at - change:]
    return line


def column_facts(header, lengths, kinds, facts=None):
    """Each column's (widths, whether it has a number, whether it has anything else) over rows
    whose cells' lengths (array) and kinds (str) come row after row; with `facts`, those of
    other rows to count in too."""
    columns = len(header)
    widths = [max(len(name), max(lengths[j::columns], default=0)) for j, name in enumerate(header)]
    numbers = ["n" in kinds[j::columns] for j in range(columns)]
    texts = ["s" in kinds[j::columns] for j in range(columns)]
    if facts:
        widths, numbers, texts = ([max(a, b) for a, b in zip(widths, facts[0])], [a or b for a, b in zip(numbers, facts[1])],
                                  [a or b for a, b in zip(texts, facts[2])])
    return [widths, numbers, texts]


def prefix_facts(header, old, kept):
    """column_facts of the old table's first `kept` rows: its own where the rows after them
    decided nothing (no widest cell, no kind only they had), else worked out again."""
    columns, facts = len(header), old["facts"]
    if kept == len(old["names"]):
        return facts
    lengths, kinds = old["lengths"][:kept * columns], old["kinds"][:kept * columns]
    tail = column_facts(header, old["lengths"][kept * columns:], old["kinds"][kept * columns:])
    widths = [width if tail[0][j] < width else max(len(header[j]), max(lengths[j::columns], default=0))
              for j, width in enumerate(facts[0])]
    numbers = [has if not tail[1][j] else "n" in kinds[j::columns] for j, has in enumerate(facts[1])]
    texts = [has if not tail[2][j] else "s" in kinds[j::columns] for j, has in enumerate(facts[2])]
    return [widths, numbers, texts]


def layout_of(facts):
    """(each column's width, whether it is right-aligned): a column with numbers and nothing
    else is; the first, exper, never is."""
    widths, numbers, texts = facts
    return widths, [j > 0 and n and not t for j, (n, t) in enumerate(zip(numbers, texts))]
