"""The table's cells (make table): a value as a csv cell and as an aligned text cell, and which
columns are numeric. A column is numeric (right-aligned, summarised) where it has a number and
nothing but numbers. Standard library only.
"""
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


def render_row(experiment, rows, i, keys):
    """Row i's csv line and its cells' kinds (kind of each value), the usual types (a table
    has 100,000 rows) by hand."""
    cells, kinds = [csv_cell(experiment)], ["s"]
    for value in row_values(rows, i, keys):
        kind_of = type(value)
        if kind_of is float:
            cells.append(repr(value) if value == value else "")  # a NaN is a number without a cell
            kinds.append("n")
        elif kind_of is int:
            cells.append(str(value))
            kinds.append("n")
        elif value is None:
            cells.append("")
            kinds.append("-")
        else:
            cells.append(csv_cell(value))
            kinds.append(kind(value))
    return (",".join(cells) + "\n").encode(), "".join(kinds)


def kind(value):
    """n: a number, -: nothing, s: anything else (a column with an s is not numeric)."""
    return "-" if value is None else "n" if is_number(value) else "s"


def column_kinds(columns, kinds, facts=None):
    """Each column's (whether it has a number, whether it has anything else) over rows whose
    cells' kinds (str) come row after row; with `facts`, those of other rows to count in too."""
    numbers = ["n" in kinds[j::columns] for j in range(columns)]
    texts = ["s" in kinds[j::columns] for j in range(columns)]
    if facts:
        numbers, texts = [a or b for a, b in zip(numbers, facts[0])], [a or b for a, b in zip(texts, facts[1])]
    return [numbers, texts]


def numeric(facts):
    """Whether each column is numeric: a number and nothing else (the first, exper, never is)."""
    numbers, texts = facts
    return [j > 0 and n and not t for j, (n, t) in enumerate(zip(numbers, texts))]


def aligned_text(header, table):
    """`table` (rows of values, the first column exper) as aligned text: each numeric column
    right-aligned, floats to 6 significant digits."""
    cells = [[row[0], *map(txt_cell, row[1:])] for row in table]
    right = numeric(column_kinds(len(header), "".join(kind(v) for row in table for v in row)))
    widths = [max([len(name), *(len(row[j]) for row in cells)]) for j, name in enumerate(header)]

    def line(row, align):
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, align)).rstrip() + "\n"
    return line(header, [False] * len(header)) + "".join(line(row, right) for row in cells)
