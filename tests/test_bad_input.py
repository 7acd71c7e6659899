"""Bad input to every target (issue 7): each is refused with one `error:` line, no traceback,
no command injected, and nothing changed, the user's own edits included.

One module-scoped project holds the experiments every case needs: a/0 (finished, recorded
in the list `record`, with its title and table made) and a/1 (a copy of a/0 marked failed:
unfinished, so `make continue TAG=a` takes it up), and a commit after tag a, so that tag a is
at another commit than HEAD. Each case works in its own copy of that project, with an
untracked file of the user's, and (for the targets that accept a dirty tree) an uncommitted
edit to a tracked file. Values that try to inject a command `touch` a marker in the project
(`pwned`) and at an absolute path beside it ({M}); {T} stands for an absolute folder.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import assert_refused, copy_project

MARKER = "pwned"
UNTRACKED = "my-notes.txt"  # the user's untracked file, in every case
UNTRACKED_TEXT = "ideas; $(not a command) `nor this`\n"
EDITED = "code/config.py"  # a tracked file with an uncommitted edit, where the target accepts one
EDIT = "# an uncommitted edit of the user's\n"
LIST_FILE = "__statistic__/exper-list/record.txt"
TITLE = "__statistic__/title/record.json"


# ---- the shared experiments -----------------------------------------------------------------

@pytest.fixture(scope="module")
def prepared(pristine, tmp_path_factory):
    project = copy_project(pristine, tmp_path_factory.mktemp("bad_input"))
    project.make("run", TAG="a", FIX="1")
    # a/1: unfinished, without a second training
    shutil.copytree(project.result("a", 0), project.result("a", 1), symlinks=True)
    statistic = dict(project.statistic("a", 0), id=1, status="failed")
    (project.result("a", 1) / "statistic.json").write_text(json.dumps(statistic, indent=2) + "\n")
    project.make("record", EXP="a/0")
    project.make("table")
    # HEAD moves on past tag a (a file no make rule depends on)
    (project.path / "NOTES.md").write_text("later work\n")
    project.git("add", "NOTES.md")
    project.git("commit", "-qm", "later")
    return project


def copy_of(prepared, tmp_path):
    project = copy_project(prepared.path, tmp_path)
    (project.path / UNTRACKED).write_text(UNTRACKED_TEXT)
    return project


def user_files(project):
    """The user's own files, byte for byte: to show they are untouched."""
    return {name: (project.path / name).read_bytes() for name in (UNTRACKED, EDITED)}


def assert_not_injected(project, tmp_path):
    injected = sorted(str(p) for p in tmp_path.rglob(f"*{MARKER}*"))
    assert not injected, f"an injected command ran: {injected}"
    assert not (project.path / MARKER).exists()


# ---- setups (applied before the snapshot) ---------------------------------------------------

def corrupt_statistic(tag, number, text='{"tag": "a", "id": '):
    def setup(project):
        (project.result(tag, number) / "statistic.json").write_text(text)
    return setup


def truncate_checkpoints(tag, number):
    def setup(project):
        for checkpoint in (project.result(tag, number) / "checkpoint").glob("epoch_[0-9]*.pth"):
            checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    return setup


def list_line(line):
    def setup(project):
        with open(project.path / LIST_FILE, "a") as f:
            f.write(f"{line}\n")
    return setup


def older(project, relative):
    """Make a file older than its prerequisites, so that make remakes it."""
    path = project.path / relative
    earlier = path.stat().st_mtime_ns - 100 * 10**9
    os.utime(path, ns=(earlier, earlier))


def corrupt_title(project):
    title = project.path / TITLE
    text = title.read_text()
    assert '"hparams.lr",' in text
    title.write_text(text.replace('"hparams.lr",', '"hparams.lr"'))  # a missing comma
    older(project, TITLE)


def title_not_an_array(project):
    (project.path / TITLE).write_text('{"hparams.lr": true}\n')


def stale_table(project):
    list_line("a/1")(project)


def staged_edit(project):
    with open(project.path / EDITED, "a") as f:
        f.write(EDIT)
    project.git("add", EDITED)


# ---- the cases ----------------------------------------------------------------------------

def case(name, target, fragments, setup=None, dirty=None, xfail=None, **variables):
    """dirty: an uncommitted edit to a tracked file (default: every target but run)."""
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    dirty = target != "run" if dirty is None else dirty
    if isinstance(fragments, str):
        fragments = [fragments]
    return pytest.param(target, variables, fragments, setup, dirty, id=name, marks=marks)


CASES = [
    # ---- run: TAG
    case("run-TAG-backtick", "run", "is not a valid tag", TAG="`touch pwned`"),
    case("run-TAG-single-quote", "run", "is not a valid tag", TAG="x'; touch pwned; '"),
    case("run-TAG-double-quote", "run", "is not a valid tag", TAG='x"; touch {M}; "'),
    case("run-TAG-dollar-subshell-abs", "run", "is not a valid tag", TAG="$(touch {M})"),
    case("run-TAG-parent-path", "run", "is not a valid tag", TAG="../escape"),
    case("run-TAG-absolute-path", "run", "is not a valid tag", TAG="{T}/abs"),
    case("run-TAG-with-id", "run", "is not a valid tag", TAG="a/0"),
    case("run-TAG-newline", "run", "is not a valid tag", TAG="a\ntouch pwned"),
    case("run-TAG-lock-suffix", "run", "is not a valid tag", TAG="x.lock"),
    case("run-TAG-too-long", "run", "is not a valid tag", TAG="a" * 101),
    case("run-TAG-missing-with-MSG", "run", "TAG is missing", MSG='x"; touch pwned; "'),
    # ---- run: the other variables (TAG valid and new, so only they can be refused)
    case("run-FIX-semicolon", "run", "FIX='1; touch pwned' is not 0 or 1", TAG="new", FIX="1; touch pwned"),
    case("run-FIX-make-shell", "run", "is not 0 or 1", TAG="new", FIX="$(shell touch pwned)"),
    case("run-GPUS-subshell", "run", "is not a list of GPU indices", TAG="new", GPUS="$(touch pwned)"),
    case("run-GPUS-space", "run", "is not a list of GPU indices", TAG="new", GPUS="0, 1"),
    case("run-NPROC-semicolon-abs", "run", "is not a number", TAG="new", NPROC="2;touch {M}"),
    case("run-NPROC-negative", "run", "is not a number", TAG="new", NPROC="-2"),
    case("run-NPROC-too-many", "run", "NPROC=257 is out of range", TAG="new", NPROC="257"),
    case("run-NNODES-subshell", "run", "NNODES='$(touch pwned)' is not a number", TAG="new",
         NNODES="$(touch pwned)"),
    case("run-NODE_RANK-quote", "run", "NODE_RANK=", TAG="new", NODE_RANK="1'"),
    case("run-MASTER_ADDR-backtick", "run", "needs MASTER_ADDR", TAG="new", NNODES="2",
         MASTER_ADDR="`touch pwned`", MASTER_PORT="29500"),
    case("run-MASTER_PORT-semicolon", "run", "is not a number", TAG="new", MASTER_PORT="1;touch pwned"),
    case("run-MASTER_PORT-zero", "run", "is not a port", TAG="new", MASTER_PORT="0"),
    # ---- run: the tree and the tag
    case("run-tag-at-other-commit-TB-make-shell", "run", ["tag a is at", "not at HEAD"], TAG="a",
         FIX="1", TB="$(shell touch pwned)"),
    case("run-staged-change", "run", ["uncommitted changes", EDITED], setup=staged_edit, TAG="new"),
    case("run-dirty-MSG-bad-TAG", "run", "is not a valid tag", dirty=True, TAG="-x",
         MSG="x$(touch pwned)`touch {M}`"),
    case("run-dirty-MSG-tag-at-other-commit", "run", "tag a is at", dirty=True, TAG="a",
         MSG="x$(touch pwned)"),
    # ---- continue
    case("continue-TAG-missing", "continue", "TAG is missing"),
    case("continue-TAG-parent-path", "continue", "is not a valid tag", TAG="../a"),
    case("continue-TAG-absolute-path", "continue", "is not a valid tag", TAG="{T}"),
    case("continue-TAG-make-shell", "continue", "is not a valid tag", TAG="$(shell touch pwned)"),
    case("continue-ID-semicolon", "continue", "ID='1; touch pwned' is not a number", TAG="a", ID="1; touch pwned"),
    case("continue-ID-absolute-path", "continue", "is not a number", TAG="a", ID="{T}"),
    case("continue-ID-leading-zero", "continue", "is not a number", TAG="a", ID="01"),
    case("continue-ID-ten-digits", "continue", "is not a number", TAG="a", ID="1000000000"),
    case("continue-GPUS-quote", "continue", "is not a list of GPU indices", TAG="a", GPUS="0'"),
    case("continue-NNODES-zero", "continue", "NNODES=0 is out of range", TAG="a", NNODES="0"),
    case("continue-corrupt-statistic", "continue", ["__result__/a/1/statistic.json", "not valid JSON"],
         setup=corrupt_statistic("a", 1), TAG="a"),
    case("continue-every-checkpoint-truncated", "continue", "no readable checkpoint",
         setup=truncate_checkpoints("a", 1), TAG="a"),
    # ---- rerun
    case("rerun-TAG-missing", "rerun", "TAG is missing", ID="0"),
    case("rerun-TAG-backtick", "rerun", "is not a valid tag", TAG="a`touch pwned`"),
    case("rerun-TAG-absolute-path", "rerun", "is not a valid tag", TAG="{T}/a"),
    case("rerun-ID-parent-path", "rerun", "is not a number", TAG="a", ID="../1"),
    case("rerun-ID-subshell-abs", "rerun", "is not a number", TAG="a", ID="$(touch {M})"),
    case("rerun-ID-double-quote", "rerun", "is not a number", TAG="a", ID='0"; touch pwned; "'),
    case("rerun-NODE_RANK-not-below-NNODES", "rerun", "NODE_RANK=1 is not below NNODES=1", TAG="a",
         NNODES="1", NODE_RANK="1"),
    case("rerun-corrupt-statistic", "rerun", ["__result__/a/0/statistic.json", "not valid JSON"],
         setup=corrupt_statistic("a", 0), TAG="a"),
    # ---- record
    case("record-LIST-absolute-path", "record", "is not a list name", LIST="{T}/list", EXP="a/0"),
    case("record-LIST-backtick", "record", "is not a list name", LIST="x`touch pwned`", EXP="a/0"),
    case("record-LIST-single-quote", "record", "is not a list name", LIST="x';touch pwned;'", EXP="a/0"),
    case("record-LIST-finished", "record", "is kept by make run", LIST="finished", EXP="a/0"),
    case("record-EXP-parent-path", "record", "'../a/0' is not tag/id or tag", EXP="../a/0", LIST="other"),
    case("record-EXP-absolute-path", "record", "is not tag/id or tag", EXP="{T}/a/0", LIST="other"),
    case("record-EXP-dotdot-id", "record", "is not tag/id or tag", EXP="a/../a", LIST="other"),
    case("record-EXP-subshell", "record", "is not tag/id or tag", EXP="a/0 $(touch pwned)", LIST="other"),
    case("record-EXP-comment", "record", "EXP: '#x' is not tag/id or tag", EXP="#x", LIST="other"),
    case("diff-A-comment", "diff", "A: '#x' is not tag/id or tag", A="#x", B="a/0"),
    case("record-EXP-make-shell", "record", "is not tag/id or tag", EXP="$(shell touch pwned)", LIST="other"),
    case("record-corrupt-statistic", "record", ["__result__/a/0/statistic.json", "not valid JSON"],
         setup=corrupt_statistic("a", 0), EXP="a/0", LIST="other"),
    case("record-default-corrupt-statistic", "record", ["__result__/a/0/statistic.json", "not valid JSON"],
         setup=corrupt_statistic("a", 0), LIST="other"),
    # ---- title
    case("title-LIST-absolute-path", "title", "is not a list name", LIST="/etc/passwd"),
    case("title-LIST-parent-path", "title", "is not a list name", LIST="a/../record"),
    case("title-LIST-double-quote", "title", "is not a list name", LIST='x";touch {M};"'),
    case("title-LIST-unknown", "title", "unknown list nope", LIST="nope"),
    case("title-corrupt-title", "title", [TITLE, "delimiter"], setup=corrupt_title),
    case("title-corrupt-statistic", "title", ["__result__/a/0/statistic.json", "not valid JSON"],
         setup=corrupt_statistic("a", 0)),
    case("title-list-line-parent-path", "title", ["record.txt line 2", "'../a/0' is not tag/id or tag"],
         setup=list_line("../a/0")),
    case("title-list-line-absolute-path", "title", ["record.txt line 2", "is not tag/id or tag"],
         setup=list_line("/etc/passwd")),
    # ---- table
    case("table-LIST-backtick", "table", "is not a list name", LIST="`touch pwned`"),
    case("table-LIST-subshell-abs", "table", "is not a list name", LIST="$(touch {M})"),
    case("table-CHANGED-semicolon", "table", "CHANGED='1; touch pwned' is not 0 or 1", CHANGED="1; touch pwned"),
    case("table-CHANGED-make-shell", "table", "is not 0 or 1", CHANGED="$(shell touch pwned)"),
    case("table-CHANGED-bad-with-stale-table", "table", "is not 0 or 1", setup=stale_table,
         CHANGED="yes"),
    case("table-title-not-an-array", "table", [TITLE, "not a JSON array of strings"], setup=title_not_an_array),
    case("table-corrupt-statistic", "table", ["__result__/a/0/statistic.json", "not valid JSON"],
         setup=corrupt_statistic("a", 0)),
    case("table-list-line-tag-parent-path", "table", ["record.txt line 2", "is not tag/id or tag"],
         setup=list_line("../../etc")),
    # ---- ls
    case("ls-TAG-semicolon", "ls", "is not a tag", TAG="a;touch pwned"),
    case("ls-TAG-subshell-abs", "ls", "is not a tag", TAG="$(touch {M})"),
    case("ls-TAG-backtick", "ls", "is not a tag", TAG="`touch pwned`"),
    case("ls-TAG-make-shell", "ls", "is not a tag", TAG="$(shell touch pwned)"),
    case("ls-TAG-absolute-path", "ls", "is not a tag", TAG="{T}"),
    case("ls-TAG-corrupt-statistic", "ls", ["__result__/a/1/statistic.json", "not valid JSON"],
         setup=corrupt_statistic("a", 1), TAG="a"),
    case("ls-statistic-not-an-object", "ls", ["__result__/a/0/statistic.json", "not a JSON object"],
         setup=corrupt_statistic("a", 0, "[1, 2]\n")),
    # ---- more, sweep
    case("more-TAG-backtick", "more", "is not a valid tag", TAG="a`touch pwned`"),
    case("more-TAG-unknown", "more", "unknown tag nope", TAG="nope"),
    case("more-FIX-make-shell", "more", "is not 0 or 1", TAG="a", FIX="$(shell touch pwned)"),
    case("sweep-NAME-subshell-abs", "sweep", "is not a sweep name", NAME="$(touch {M})"),
    case("sweep-NAME-parent-path", "sweep", "is not a sweep name", NAME="../config"),
    case("sweep-JOBS-semicolon", "sweep", "JOBS='2;touch pwned' is not a number", NAME="s", JOBS="2;touch pwned"),
    case("sweep-GPUS-backtick", "sweep", "is not a list of distinct GPU indices", NAME="s", GPUS="`touch pwned`"),
    # ---- diff, rm, restore, empty-trash
    case("diff-A-subshell", "diff", "is not tag/id or tag", A="$(touch pwned)", B="a/0"),
    case("diff-B-absolute-path", "diff", "is not tag/id or tag", A="a/0", B="{T}/a/0"),
    case("diff-FULL-make-shell", "diff", "is not 0 or 1", A="a/0", B="a/1", FULL="$(shell touch pwned)"),
    case("rm-EXP-parent-path", "rm", "is not tag/id or tag", EXP="../a/0"),
    case("rm-EXP-backtick", "rm", "is not tag/id or tag", EXP="a/0 `touch pwned`"),
    case("rm-EXP-in-a-list", "rm", "named in your list(s) record (a/0)", EXP="a/0"),
    case("rm-EXP-missing", "rm", "EXP is missing"),
    case("restore-EXP-not-in-trash", "restore", "there is no experiment a/0 in __result__/.trash/", EXP="a/0"),
    case("restore-EXP-absolute-path", "restore", "is not tag/id or tag", EXP="{T}"),
    case("empty-trash-YES-semicolon", "empty-trash", "is not 1", setup=lambda project: project.make("rm", EXP="a/1"),
         YES="1; touch pwned"),
    # ---- bench (refused before anything is measured)
    case("bench-BENCH_SCALE-subshell", "bench", "is not a number of experiments", BENCH_SCALE="$(touch pwned)"),
    case("bench-BENCH_SCALE-too-small", "bench", "BENCH_SCALE='5' is not a number", BENCH_SCALE="5"),
    # ---- tb (only what is refused before a server starts)
    case("tb-LIST-parent-path", "tb", "is not a list name", LIST="../record"),
    case("tb-LIST-and-TAGS", "tb", "TAGS and LIST were both given", LIST="record", TAGS="a"),
    case("tb-TAGS-absolute-path", "tb", "is not a tag or tag/id", TAGS="{T}"),
    case("tb-TAGS-dotdot", "tb", "is not a tag or tag/id", TAGS="a..b"),
    case("tb-TAGS-backtick", "tb", "is not a tag or tag/id", TAGS="a `touch pwned`"),
    case("tb-TAGS-make-shell", "tb", "is not a tag or tag/id", TAGS="$(shell touch pwned)"),
    case("tb-PORT-subshell", "tb", "is not a port", TAGS="a", PORT="$(touch pwned)"),
    case("tb-PORT-make-shell-abs", "tb", "is not a port", TAGS="a", PORT="$(shell touch {M})"),
    case("tb-HOST-semicolon", "tb", "is not a host name or IP address", HOST="127.0.0.1;touch pwned"),
    case("tb-HOST-single-quote", "tb", "is not a host name or IP address", HOST="'"),
    case("tb-HOST-absolute-path", "tb", "is not a host name or IP address", HOST="{T}"),
]


@pytest.mark.parametrize("target, variables, fragments, setup, dirty", CASES)
def test_bad_input_is_refused_and_changes_nothing(prepared, tmp_path, target, variables, fragments, setup, dirty):
    project = copy_of(prepared, tmp_path)
    if dirty:
        with open(project.path / EDITED, "a") as f:
            f.write(EDIT)
    if setup:
        setup(project)
    marker = tmp_path / MARKER  # beside the project: where an absolute path leads
    values = {k: v.replace("{M}", str(marker)).replace("{T}", str(tmp_path)) for k, v in variables.items()}
    mine, before = user_files(project), project.snapshot()
    result = project.make(target, check=False, timeout=120, **values)
    assert_refused(result, *fragments)
    assert_not_injected(project, tmp_path)
    assert user_files(project) == mine
    assert project.snapshot() == before


# ---- beyond the parameters --------------------------------------------------------------------

def test_values_from_the_environment_are_ignored(prepared, tmp_path):
    """Only the command line sets a variable: TAG and friends in the environment do nothing."""
    project = copy_of(prepared, tmp_path)
    marker = tmp_path / MARKER
    env = dict(project.env, TAG=f"$(shell touch {marker})", MSG="$(shell touch pwned)", LIST="`touch pwned`")
    before = project.snapshot()
    result = subprocess.run(["make", "run", f"PYTHON={sys.executable}", "TB=0"], cwd=project.path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert_refused(result, "TAG is missing")
    assert_not_injected(project, tmp_path)
    assert project.snapshot() == before


def test_help_ignores_every_variable(prepared, tmp_path):
    project = copy_of(prepared, tmp_path)
    marker = tmp_path / MARKER
    before = project.snapshot()
    result = project.make("help", TAG=f"$(shell touch {marker})", LIST="$(shell touch pwned)", TAGS="`touch pwned`",
                          EXP="; touch pwned", PORT="$(touch pwned)")
    assert result.stdout.startswith("usage: make TARGET") and result.stderr == ""
    assert_not_injected(project, tmp_path)
    assert project.snapshot() == before


def test_a_pickled_payload_as_the_newest_checkpoint_never_runs(prepared, tmp_path):
    """A planted epoch_9.pth (and epoch_last.pth pointing at it) whose unpickling would run a
    command: make continue must not run it, but fall back to epoch_3.pth or refuse."""
    import torch

    project = copy_of(prepared, tmp_path)
    with open(project.path / EDITED, "a") as f:
        f.write(EDIT)
    markers = [project.path / MARKER, tmp_path / f"{MARKER}-abs"]

    class Payload:
        def __reduce__(self):
            return (os.system, (" ; ".join(f"touch {m}" for m in markers),))

    folder = project.result("a", 1) / "checkpoint"
    torch.save({"model": Payload(), "epoch": 9}, folder / "epoch_9.pth")
    (folder / "epoch_last.pth").unlink()
    (folder / "epoch_last.pth").symlink_to("epoch_9.pth")
    mine = user_files(project)
    result = project.make("continue", TAG="a", check=False)
    assert not any(m.exists() for m in markers), "the checkpoint's payload ran"
    assert "Traceback" not in result.stdout + result.stderr
    if result.returncode == 0:
        assert "epoch_9.pth is unreadable" in result.stdout
        assert "continuing a/1 from epoch 4, step 0 of " in result.stdout
        assert project.statistic("a", 1)["status"] == "finished"
    else:
        assert_refused(result)
    assert user_files(project) == mine


SCANS = {
    "eval": re.compile(r"(?<![\w.])eval\s*\("),
    "exec": re.compile(r"(?<![\w.])exec\s*\("),
    "pickle.load": re.compile(r"\b(c?[Pp]ickle\.(loads?|Unpickler)|dill\.loads?)\s*\("),
}


def torch_loads_without_weights_only(text):
    """Each torch.load(...) call whose arguments lack weights_only=True."""
    bad = []
    for match in re.finditer(r"torch\.load\s*\(", text):
        depth, end = 1, match.end()
        while depth and end < len(text):
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            end += 1
        call = text[match.start():end]
        if not re.search(r"weights_only\s*=\s*True", call):
            bad.append(call)
    return bad


@pytest.mark.parametrize("pattern", [
    "eval",
    "exec",
    "pickle.load",
    "torch.load",
])
def test_no_code_runs_data(prepared, pattern):
    """A plain text scan of the committed files under code/ and scripts/."""
    files = prepared.git("ls-files", "--", "code", "scripts").splitlines()
    assert "code/main.py" in files and "scripts/experiment.py" in files
    found = []
    for name in files:
        try:
            text = (prepared.path / name).read_text()
        except UnicodeDecodeError:
            continue  # not source
        if pattern == "torch.load":
            found += [f"{name}: {call}" for call in torch_loads_without_weights_only(text)]
        else:
            found += [f"{name}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
                      for m in SCANS[pattern].finditer(text)]
    assert not found, found
