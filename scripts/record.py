"""What scripts/tb.py still imports by this name, until its import line names cli and lists
(the lists' commands are scripts/lists.py's, make's scan scripts/scan.py's)."""
from cli import UserError, run_mode  # noqa: F401
from lists import list_name, read_list  # noqa: F401
