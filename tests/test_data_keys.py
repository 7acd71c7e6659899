"""What keys prepared data, and the prepared folders kept in view (issue 33): raw files a config
value names are part of the data's key; make data-ls lists the folders and the runs that used
each, make data-rm removes one no run names; a NAME=value make does not know is refused."""
import json
import os
import sys

from conftest import ROOT, assert_refused

sys.path.append(str(ROOT / "code"))
from gitexp import datastore  # noqa: E402  (the standard library only)


def manifest(project, key):
    return json.loads((project.path / "__data__" / key / ".gitexp-data.json").read_text())


def prepared_key(out):
    """The key make data's last line names: `data: __data__/<key> (fingerprint ...)`."""
    return out.strip().splitlines()[-1].split("__data__/")[1].split()[0]


def read_raw_folder(project):
    """data.py's prepare() also reads raw/notes.txt through the config value raw_dir = "raw"."""
    (project.path / "raw").mkdir()
    (project.path / "raw" / "notes.txt").write_text("first\n")
    with open(project.path / "code" / "config.py", "a") as f:
        f.write('raw_dir = "raw"  # raw files prepare() reads\n')
    data_py = project.path / "code" / "data.py"
    text = data_py.read_text()
    saved = '    np.save(folder / "labels.npy", digits.target.astype(np.int64))\n'
    assert saved in text
    data_py.write_text(text.replace(saved, saved + '    (folder / "notes.txt").write_text(open(f"{cfg.raw_dir}/notes.txt").read())\n'))


def test_edited_raw_files_are_prepared_anew_and_unchanged_ones_reused(project):
    # a record from before raw data was keyed (no "raw") stays valid where no value names a path
    (old,) = [p for p in (project.path / "__data__").iterdir() if (p / ".gitexp-data.json").exists()]
    record = json.loads((old / ".gitexp-data.json").read_text())
    record.pop("raw", None)
    (old / ".gitexp-data.json").write_text(json.dumps(record))
    assert "preparing" not in project.make("data").stdout

    read_raw_folder(project)
    out = project.make("data").stdout
    assert "preparing data (code changed: data.py)" in out
    first = prepared_key(out)
    assert set(manifest(project, first)["raw"]) == {"raw_dir"}
    assert manifest(project, first)["config"] == {"raw_dir": "raw"}
    out = project.make("data").stdout
    assert "preparing" not in out and prepared_key(out) == first  # unchanged: reused

    notes = project.path / "raw" / "notes.txt"
    notes.write_text("second\n")  # the same size, other content
    out = project.make("data").stdout
    assert "preparing data (raw data changed: raw_dir = 'raw' (its files differ from when it was prepared))" in out
    second = prepared_key(out)
    assert second != first and (project.path / "__data__" / second / "notes.txt").read_text() == "second\n"

    notes.write_text("first\n")  # as it was: the first folder again
    out = project.make("data").stdout
    assert "preparing" not in out and prepared_key(out) == first


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


def test_data_ls_names_the_runs_of_each_folder_and_data_rm_removes_only_an_unused_one(project):
    project.make("run", TAG="x")
    key = project.statistic("x", 0)["data"]["key"]
    data_py = project.path / "code" / "data.py"
    data_py.write_text(data_py.read_text() + "# another data.py: another folder\n")
    unused = prepared_key(project.make("data").stdout)
    project.git("checkout", "--", "code/data.py")

    lines = project.make("data-ls").stdout.splitlines()
    (mine,) = [n for n, line in enumerate(lines) if line.split()[:2] == ["*", key]]  # the one used now
    assert lines[mine + 1].split() == ["runs", "(1):", "x/0"]
    (other,) = [n for n, line in enumerate(lines) if line.split()[:1] == [unused]]
    assert f"no recorded run (make data-rm KEY={unused} removes it)" in lines[other + 1]
    assert lines[-1] == f"* the working tree's code/config uses {key} now"

    before = project.snapshot()
    assert_refused(project.make("data-rm", KEY=key, check=False), "is the data of 1 recorded run(s): x/0",
                   "nothing was removed")
    assert project.snapshot() == before
    project.make("rm", EXP="x/0")
    assert "runs (1): x/0 (in the trash)" in project.make("data-ls").stdout
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
