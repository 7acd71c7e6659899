"""What keys prepared data, and the prepared folders kept in view (issue 33): raw files a config
value names are part of the data's key; make data-ls lists the folders and the runs that used
each, make data-rm removes one no run names; a NAME=value make does not know is refused."""
import json
import os
import shutil
import sys
import types

from conftest import ROOT, assert_refused

sys.path.append(str(ROOT / "code"))
from gitexp import datastore  # noqa: E402  (the standard library only)


def manifest(project, key):
    return json.loads((project.path / "__data__" / key / ".gitexp-data.json").read_text())


def prepared_key(out):
    """The key make data's last line names: `data: __data__/<key> (fingerprint ...)`."""
    return out.strip().splitlines()[-1].split("__data__/")[1].split()[0]


def read_raw_folder(project):
    """A data.py whose prepare() reads raw/notes.txt through the config value raw_dir = "raw"
    (and nothing else: make data alone runs it, in a fraction of a second)."""
    (project.path / "raw").mkdir()
    (project.path / "raw" / "notes.txt").write_text("first\n")
    with open(project.path / "code" / "config.py", "a") as f:
        f.write('raw_dir = "raw"  # raw files prepare() reads\n')
    (project.path / "code" / "data.py").write_text(
        'def prepare(cfg, folder):\n'
        '    (folder / "notes.txt").write_text(open(f"{cfg.raw_dir}/notes.txt").read())\n')


def test_edited_raw_files_are_prepared_anew_and_unchanged_ones_reused(project):
    read_raw_folder(project)
    out = project.make("data").stdout
    assert "preparing data (code changed: data.py)" in out
    first = prepared_key(out)

    notes = project.path / "raw" / "notes.txt"
    notes.write_text("second\n")  # the same size, other content
    out = project.make("data").stdout
    assert "preparing data (raw data changed: raw_dir = 'raw' (its files differ from when it was prepared))" in out
    second = prepared_key(out)
    assert second != first and (project.path / "__data__" / second / "notes.txt").read_text() == "second\n"

    notes.write_text("first\n")  # as it was when the first was prepared: that folder again
    out = project.make("data").stdout
    assert "preparing" not in out and prepared_key(out) == first
    assert manifest(project, first)["config"] == {"raw_dir": "raw"}
    assert set(manifest(project, first)["raw"]) == set(manifest(project, second)["raw"]) == {"raw_dir"}


def test_the_raw_fingerprint_follows_names_sizes_and_small_files_contents(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datastore, "RAW_HASHED", 8)
    (tmp_path / "raw" / "sub").mkdir(parents=True)
    (tmp_path / "raw" / "small").write_text("abc")
    (tmp_path / "raw" / "sub" / "big").write_text("0123456789")
    first = datastore.raw_fingerprint("raw")
    assert datastore.raw_fingerprint(["raw", "nothing"]) == first  # a list: the files of those it names
    assert datastore.raw_fingerprint("val_acc") is None and datastore.raw_fingerprint(3) is None
    assert datastore.raw_fingerprint(["raw/small"]) == datastore.raw_fingerprint("raw/small") is not None

    big = tmp_path / "raw" / "sub" / "big"
    stat = big.stat()
    big.write_text("9876543210")  # larger than RAW_HASHED: its content is not read, its mtime counts
    os.utime(big, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert datastore.raw_fingerprint("raw") == first
    os.utime(big, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert datastore.raw_fingerprint("raw") != first
    os.utime(big, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    (tmp_path / "raw" / "small").write_text("abd")
    assert datastore.raw_fingerprint("raw") != first
    (tmp_path / "raw" / "small").write_text("abc")
    (tmp_path / "raw" / "new").write_text("")
    assert datastore.raw_fingerprint("raw") != first
    (tmp_path / "__data__").mkdir()
    assert datastore.raw_fingerprint(".") is None  # the project itself: every preparation would change it


def test_a_record_from_before_raw_data_was_keyed_fits_where_no_value_names_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "raw").mkdir()
    cfg, code = types.SimpleNamespace(n_files=3, raw_dir="raw"), {"data.py": "0" * 64}
    assert datastore.matches({"code": code, "config": {"n_files": 3}}, cfg, code)  # no "raw" field
    old = {"code": code, "config": {"raw_dir": "raw"}}
    assert not datastore.matches(old, cfg, code)
    assert datastore.raw_changes(old, datastore.RawNow(cfg)) == [
        "raw_dir = 'raw' (its files were not fingerprinted when it was prepared)"]


def recorded_run(project, tag, number, key):
    """A finished run's statistic.json as far as data-ls and data-rm read it (that a run records
    the key of the folder it used, test_data.py shows; a run here would cost seconds)."""
    folder = project.result(tag, number)
    folder.mkdir(parents=True)
    (folder / "statistic.json").write_text(json.dumps(
        {"tag": tag, "id": number, "status": "finished", "data": {"key": key, "fingerprint": "0" * 64}}))


def test_data_ls_names_the_runs_of_each_folder_and_data_rm_removes_only_an_unused_one(project):
    (key,) = [p.name for p in (project.path / "__data__").iterdir() if (p / ".gitexp-data.json").exists()]
    recorded_run(project, "x", 0, key)
    recorded_run(project, "y", 0, key)
    unused = "0123456789abcdef"  # a folder as another data.py would have prepared
    shutil.copytree(project.path / "__data__" / key, project.path / "__data__" / unused)
    record = dict(manifest(project, key), key=unused, code={"data.py": "0" * 64})
    (project.path / "__data__" / unused / ".gitexp-data.json").write_text(json.dumps(record))

    before = project.snapshot()
    assert_refused(project.make("data-rm", KEY=key, check=False), "is the data of 2 recorded run(s): x/0 y/0:",
                   "nothing was removed")
    assert project.snapshot() == before
    project.make("rm", EXP="x/0")
    lines = project.make("data-ls").stdout.splitlines()
    (mine,) = [n for n, line in enumerate(lines) if line.split()[:2] == ["*", key]]  # the one used now
    assert lines[mine + 1].split() == ["runs", "(2):", "y/0", "x/0", "(in", "the", "trash)"]
    (other,) = [n for n, line in enumerate(lines) if line.split()[:1] == [unused]]
    assert f"no recorded run (make data-rm KEY={unused} removes it)" in lines[other + 1]
    assert lines[-1] == f"* the working tree's code/config uses {key} now"

    before = project.snapshot()
    assert_refused(project.make("data-rm", KEY=key[:8], check=False), "x/0 (in the trash)", "nothing was removed")
    missing = next(k for k in ("abcdef01", "fedcba98") if not unused.startswith(k) and not key.startswith(k))
    assert_refused(project.make("data-rm", KEY=missing, check=False), "there is no prepared data")
    assert_refused(project.make("data-rm", KEY="../x", check=False), "is not a data key")
    assert_refused(project.make("data-rm", check=False), "KEY is missing")
    assert project.snapshot() == before

    assert project.make("data-rm", KEY=unused[:6]).stdout.startswith(f"removed __data__/{unused} (")
    assert not (project.path / "__data__" / unused).exists() and (project.path / "__data__" / key).is_dir()
    assert not [p for p in (project.path / "__data__").iterdir() if p.name.startswith(".removing")]


def test_a_variable_make_does_not_know_is_refused_and_changes_nothing(project):
    before = project.snapshot()
    assert_refused(project.make("run", TAG="x", n_layer="4", check=False),
                   "n_layer=4 is not a make variable", "config values live in code/config.py")
    assert_refused(project.make("ls", FOO="1", check=False), "FOO=1 is not a make variable")
    assert_refused(project.make(FOO="$(shell touch pwned)", lr="`touch pwned`", check=False),
                   "are not make variables")
    assert project.snapshot() == before
