"""make record, title, table and ls: lists of experiments, their titles and tables.

One test makes a real run; the others write statistic.json files by hand (shaped like the
real ones), since what they check is the bookkeeping, not the training.
"""
import csv
import json
import math
import os
import re
import shutil
import time

import pytest

from conftest import assert_refused

TITLE = "__statistic__/title/record.json"
TABLE = "__statistic__/table/record.csv"
SUMMARY = "__statistic__/table/record.summary.csv"


def write_statistic(project, tag, number, lr=0.002, acc=0.5, seed=7, **extra_hparams):
    statistic = {
        "tag": tag, "id": number, "commit": "0" * 40, "status": "finished", "seed": seed, "fix": False,
        "host": "test", "start": "2026-01-01T00:00:00+00:00", "end": "2026-01-01T00:01:00+00:00",
        "epoch": 3, "world_size": 1,
        "hparams": {"lr": lr, "dropout": 0.25, "keep_checkpoints": None, **extra_hparams},
        "metrics": {"best": {"epoch": 2, "val_acc": acc, "test_acc": acc},
                    "last": {"epoch": 3, "val_acc": acc, "test_acc": acc}},
        "durations": {"epoch_seconds": [1.0, 1.0, 1.0], "total_seconds": 3.0},
    }
    path = project.result(tag, number) / "statistic.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(statistic, indent=2) + "\n")
    return path


def write_list(project, name, *lines):
    path = project.path / "__statistic__" / "exper-list" / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def read_csv(project, relative):
    with open(project.path / relative, newline="") as f:
        return list(csv.DictReader(f))


def mtime(project, relative):
    return (project.path / relative).stat().st_mtime_ns


def test_record_title_table_ls_on_a_real_run(project):
    project.make("run", TAG="a")
    assert "recorded a/0" in project.make("record").stdout  # the last finished experiment
    assert "already in" in project.make("record", EXP="a/0").stdout
    assert (project.path / "__statistic__/exper-list/record.txt").read_text() == "a/0\n"

    shown = project.make("table").stdout
    statistic = project.statistic("a", 0)
    title = (project.path / TITLE).read_text()
    for key in ("hparams.lr", "hparams.keep_checkpoints", "metrics.best.test_acc", "metrics.last.epoch"):
        assert f'"{key}",' in title
    (row,) = read_csv(project, TABLE)
    assert row["exper"] == "a/0"
    assert float(row["metrics.best.test_acc"]) == statistic["metrics"]["best"]["test_acc"]
    assert float(row["hparams.lr"]) == statistic["hparams"]["lr"]
    assert re.search(r"^a\s+1\s+\S+$", shown, re.M)  # per tag: count, monitored mean
    assert project.make("table", FULL="1").stdout.splitlines()[-1].startswith("a/0 ")
    (summary,) = read_csv(project, SUMMARY)
    assert summary["tag"] == "a" and summary["count"] == "1"

    # nothing changed: nothing is rewritten
    before = project.snapshot()
    project.make("table")
    assert project.snapshot() == before

    # one statistic.json changed: the table is made again
    table_mtime = mtime(project, TABLE)
    path = project.result("a", 0) / "statistic.json"
    os.utime(path, ns=(table_mtime + 10**9, table_mtime + 10**9))
    project.make("table")
    assert mtime(project, TABLE) > table_mtime

    listing = project.make("ls").stdout
    assert re.search(r"^a\s+0\s+1\s+0\s+0\s+0\s+\w{10} template$", listing, re.M), listing
    ids = project.make("ls", TAG="a").stdout
    assert re.search(rf"^\s*0\s+finished\s+3\s+{statistic['seed']}\s", ids, re.M), ids


def test_commented_title_lines_survive_regeneration(project):
    write_statistic(project, "a", 0, lr=0.1)
    write_statistic(project, "a", 1, lr=0.2)
    write_list(project, "record", "a/0", "a/1")
    project.make("title")
    title = project.path / TITLE
    text = title.read_text()
    assert '"hparams.lr",' in text and '"hparams.dropout",' in text
    # the user hides two columns, one of them the last line, and moves dropout first
    text = text.replace('  "hparams.lr",', '//  "hparams.lr",')
    text = text.replace('  "metrics.last.test_acc",', '//"metrics.last.test_acc",')
    text = text.replace('    "hparams.dropout",\n', "").replace("[\n", '[\n    "hparams.dropout",\n')
    title.write_text(text)
    project.make("table")
    header = list(read_csv(project, TABLE)[0])
    assert header[:2] == ["exper", "hparams.dropout"]
    assert "hparams.lr" not in header and "metrics.last.test_acc" not in header

    # a new experiment with a new key: the title is made again, the user's edits kept
    write_statistic(project, "b", 0, lr=0.3, momentum=0.9)
    write_list(project, "record", "a/0", "a/1", "b/0")
    project.make("table")
    text = title.read_text()
    assert '//  "hparams.lr",' in text and '//  "metrics.last.test_acc",' in text
    assert '    "hparams.momentum",' in text
    keys = re.findall(r'"([^"]+)",', text)
    assert keys[0] == "hparams.dropout"
    assert keys.index("hparams.momentum") == keys.index("hparams.keep_checkpoints") + 1
    rows = read_csv(project, TABLE)
    assert [r["hparams.momentum"] for r in rows] == ["", "", "0.9"]
    assert "hparams.lr" not in rows[0]

    # a key no listed experiment has any more disappears; the commented ones stay commented
    write_list(project, "record", "a/0", "a/1")
    project.make("table")
    text = title.read_text()
    assert "momentum" not in text and '//  "hparams.lr",' in text


def test_a_changed_value_is_never_shown_stale(project):
    """The values read are kept in __statistic__/.deps/ and reused only while a file's stat
    (mtime, ctime, size, inode) is as it was when it was read."""
    write_statistic(project, "a", 0, lr=0.1)
    path = write_statistic(project, "a", 1, lr=0.2)
    write_list(project, "record", "a/0", "a/1")
    time.sleep(2.2)  # older than RACY_NS: the values read are kept
    project.make("table")
    assert [r["hparams.lr"] for r in read_csv(project, TABLE)] == ["0.1", "0.2"]

    # a new value, written the usual way
    write_statistic(project, "a", 0, lr=0.3)
    project.make("table")
    assert [r["hparams.lr"] for r in read_csv(project, TABLE)] == ["0.3", "0.2"]

    # a new value of the same size, written in place, the old mtime set back: its ctime says
    stat = path.stat()
    write_statistic(project, "a", 1, lr=0.7)
    assert path.stat().st_size == stat.st_size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    project.make("table")
    assert [r["hparams.lr"] for r in read_csv(project, TABLE)] == ["0.3", "0.7"]

    # a file replaced by rename with the same size and mtime: a new inode, a new ctime
    time.sleep(2.2)
    project.make("table")  # a/1's 0.7 kept as settled
    stat = path.stat()
    replacement = path.with_name("new.json")
    replacement.write_text(path.read_text().replace('"lr": 0.7', '"lr": 0.9'))
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(replacement, path)
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    project.make("table")
    assert [r["hparams.lr"] for r in read_csv(project, TABLE)] == ["0.3", "0.9"]


def test_ls_keeps_what_it_read_and_is_never_stale(project):
    write_statistic(project, "a", 0)
    path = write_statistic(project, "a", 1)
    write_statistic(project, "b", 0)
    time.sleep(2.2)  # older than RACY_NS: what make ls reads is kept
    assert re.search(r"^a\s+0-1\s+2\s+0\s+0\s+0\s", project.make("ls").stdout, re.M)
    assert (project.path / "__statistic__/.deps/ls").is_file()
    stat = path.stat()
    path.write_text(path.read_text().replace('"status": "finished"', '"status": "failed"  '))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the same size and mtime
    assert path.stat().st_size == stat.st_size
    assert re.search(r"^a\s+0-1\s+1\s+0\s+0\s+1\s", project.make("ls").stdout, re.M)
    (project.path / "__statistic__/.deps/ls").write_bytes(b"garbage")
    write_statistic(project, "b", 1)
    listing = project.make("ls").stdout
    assert re.search(r"^a\s+0-1\s+1\s+0\s+0\s+1\s", listing, re.M) and re.search(r"^b\s+0-1\s+2\s", listing, re.M)


def table_files(project, name="record"):
    return {suffix: (project.path / f"__statistic__/table/{name}{suffix}").read_bytes()
            for suffix in (".csv", ".summary.csv")}


def cold_table(project, name="record"):
    """The table made again from nothing but the title: no cache, no old table."""
    shutil.rmtree(project.path / "__statistic__/.deps")
    shutil.rmtree(project.path / "__statistic__/table")
    project.make("table", LIST=name)
    return table_files(project, name)


def test_a_table_made_from_the_old_one_equals_one_made_cold(project):
    """Rows kept from the old table (a list that grew, a wider column, a changed row in the
    middle, a row taken off, text where numbers were, non-ASCII text) give the bytes a table
    made from nothing gives."""
    for number in range(4):
        write_statistic(project, "a", number, lr=0.1 * (number + 1), acc=0.5 + number / 10)
    write_statistic(project, "b", 0, lr=0.01, acc=0.6)
    write_statistic(project, "longer-tag-name", 0, lr=123456.5, acc=0.123456789)
    write_statistic(project, "c", 0, lr=0.2, acc=0.7, note="text")
    write_statistic(project, "d", 0, lr=0.3, acc=0.8, note="naïve ünïcode")
    write_list(project, "record", "a/0", "a/1", "b/0")
    time.sleep(2.2)  # older than RACY_NS: kept rows are reused, not read again
    project.make("table")
    steps = [("a bare tag's new ids, appended", ["a/0", "a/1", "b/0", "a"]),
             ("a wider cell, appended", ["a/0", "a/1", "b/0", "a", "longer-tag-name/0"]),
             ("a row taken off the middle", ["a/0", "b/0", "a", "longer-tag-name/0"]),
             ("the wide row taken off", ["a/0", "b/0", "a"]),
             ("text in a column", ["a/0", "b/0", "a", "c/0"]),
             ("non-ASCII text", ["a/0", "b/0", "a", "c/0", "d/0"]),
             ("rows reordered", ["d/0", "a", "c/0", "b/0"])]
    for what, lines in steps:
        write_list(project, "record", *lines)
        project.make("table")
        assert table_files(project) == cold_table(project), what
    write_statistic(project, "a", 2, lr=0.05, acc=0.55)  # a changed row in the middle
    project.make("table")
    assert table_files(project) == cold_table(project)
    assert [r["hparams.lr"] for r in read_csv(project, TABLE)][3] == "0.05"


@pytest.mark.parametrize("damage", ["delete", "truncate", "garbage", "another list's"])
def test_a_damaged_cache_costs_a_cold_read_never_a_wrong_table(project, damage):
    for number in range(3):
        write_statistic(project, "a", number, lr=0.1 * (number + 1))
    write_statistic(project, "b", 0, lr=0.5)
    write_list(project, "record", "a", "b/0")
    write_list(project, "other", "b/0")
    time.sleep(2.2)
    project.make("table")
    project.make("table", LIST="other")
    for cache in sorted((project.path / "__statistic__/.deps").glob("record.*")):
        if damage == "delete":
            cache.unlink()
        elif damage == "truncate":
            cache.write_bytes(cache.read_bytes()[:len(cache.read_bytes()) // 2])
        elif damage == "garbage":
            cache.write_bytes(b"\x00garbage" * 100)
        else:
            cache.write_bytes(cache.with_name("other" + cache.suffix).read_bytes())
    write_statistic(project, "a", 1, lr=0.9)  # something for make to remake
    project.make("table")
    assert [r["hparams.lr"] for r in read_csv(project, TABLE)] == ["0.1", "0.9", "0.30000000000000004", "0.5"]
    assert table_files(project) == cold_table(project)


def test_summary_changed_columns_and_bare_tags(project):
    for number, acc in enumerate((0.5, 0.7, 0.9)):
        write_statistic(project, "a", number, lr=0.1, acc=acc, seed=7 + number)  # distinct runs: pooled
    write_statistic(project, "b", 0, lr=0.2, acc=0.4)
    write_list(project, "mine", "a", "b/0")
    project.make("table", LIST="mine")
    summary = {row["tag"]: row for row in read_csv(project, "__statistic__/table/mine.summary.csv")}
    assert summary["a"]["count"] == "3" and summary["b"]["count"] == "1"
    assert math.isclose(float(summary["a"]["metrics.best.test_acc.mean"]), 0.7)
    assert math.isclose(float(summary["a"]["metrics.best.test_acc.std"]), 0.2)  # sample std
    assert summary["b"]["metrics.best.test_acc.mean"] == "0.4"
    assert summary["b"]["metrics.best.test_acc.std"] == ""  # undefined for one id
    assert "hparams.lr.mean" not in summary["a"]

    lines = project.make("table", LIST="mine", CHANGED="1").stdout.splitlines()
    assert lines[0].split() == ["exper", "hparams.lr", "run.seed", "metrics.best.val_acc", "metrics.best.test_acc",
                                "metrics.last.val_acc", "metrics.last.test_acc"]
    assert lines[1].split()[:2] == ["a/0", "0.1"]
    assert "hparams.dropout" in read_csv(project, "__statistic__/table/mine.csv")[0]  # csv: every column

    # the bare tag takes in a new id of a
    write_statistic(project, "a", 3, lr=0.1, acc=0.3)
    project.make("table", LIST="mine")
    assert [r["exper"] for r in read_csv(project, "__statistic__/table/mine.csv")] == ["a/0", "a/1", "a/2", "a/3", "b/0"]


def test_a_failed_title_leaves_the_users_title_alone(project):
    write_statistic(project, "a", 0)
    bad = write_statistic(project, "a", 1)
    write_list(project, "record", "a")
    project.make("table")
    title = project.path / TITLE
    title.write_text(title.read_text().replace('  "hparams.lr",', '//  "hparams.lr",'))
    before = project.snapshot()
    bad.write_text('{\n  "tag": "a",\n  "id": 1\n  "status": "finished"\n}\n')
    after_corruption = project.snapshot()
    result = project.make("table", check=False)
    assert_refused(result, str(bad.relative_to(project.path)), "not valid JSON", "line 4")
    assert project.snapshot() == after_corruption
    assert {k: v for k, v in before.items() if "statistic.json" not in k} == \
           {k: v for k, v in after_corruption.items() if "statistic.json" not in k}
    assert '//  "hparams.lr",' in title.read_text()


@pytest.mark.parametrize("target, variables, fragments", [
    ("table", {"LIST": "nope"}, ["unknown list nope"]),
    ("title", {"LIST": "../x"}, ["LIST='../x' is not a list name"]),
    ("table", {"LIST": "a;b"}, ["LIST='a;b' is not a list name"]),
    ("table", {"LIST": "$(shell touch hacked)"}, ["is not a list name"]),
    ("table", {"LIST": "a b"}, ["is not a list name"]),
    ("record", {"LIST": "../x", "EXP": "a/0"}, ["LIST='../x' is not a list name"]),
    ("record", {"EXP": "zz/0"}, ["there is no experiment zz/0"]),
    ("record", {"EXP": "a/x"}, ["'a/x' is not tag/id or tag"]),
    ("ls", {"TAG": "zz"}, ["unknown tag zz"]),
    ("ls", {"TAG": "../a"}, ["is not a tag"]),
])
def test_bad_variables_are_refused(project, target, variables, fragments):
    write_statistic(project, "a", 0)
    write_list(project, "record", "a/0")
    before = project.snapshot()
    assert_refused(project.make(target, check=False, **variables), *fragments)
    assert project.snapshot() == before


def test_bad_files_are_refused(project):
    write_statistic(project, "a", 0)
    listing = write_list(project, "record", "a/0")
    project.make("table")
    title = project.path / TITLE

    # a list line naming no experiment, or not an experiment's name at all
    for line, fragment in (("zz/3", "zz/3 names no experiment"), ("a/b/c", "'a/b/c' is not tag/id or tag"),
                           ("zz", "zz names no experiment")):
        listing.write_text(f"a/0\n{line}\n")
        before = project.snapshot()
        assert_refused(project.make("table", check=False), "exper-list/record.txt line 2", fragment)
        assert project.snapshot() == before
    listing.write_text("a/0\n")
    project.make("table")

    # the title with a JSON error: named with its line, and left as it is
    text = title.read_text()
    title.write_text(text.replace('"hparams.dropout",', '"hparams.dropout"'))
    line = next(i for i, l in enumerate(title.read_text().splitlines(), 1) if '"hparams.dropout"' in l) + 1
    before = project.snapshot()
    assert_refused(project.make("table", check=False), TITLE, f"line {line}")
    assert project.snapshot() == before

    # an empty statistic.json is not valid JSON either (jq alone would read no value from it)
    title.write_text(text)
    empty = project.result("a", 0) / "statistic.json"
    empty.write_text("")
    earlier = mtime(project, TITLE) - 2 * 10**9  # the title older, whatever the clock's tick
    os.utime(title, ns=(earlier, earlier))
    before = project.snapshot()
    assert_refused(project.make("title", check=False), "__result__/a/0/statistic.json", "not valid JSON")
    assert project.snapshot() == before
    assert_refused(project.make("ls", check=False), "__result__/a/0/statistic.json", "not valid JSON")
