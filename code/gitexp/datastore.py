"""Prepared data sets, each kept under a key of what made it (the template's machinery).

Your data.py's `prepare(cfg, folder)` writes a data set into an empty folder. It runs once per
distinct data set: the folder __data__/<key>/ is named after what its data depends on, namely
the source of data.py (and of the modules of code/ that data.py imports), the config values
prepare() read, and the raw files those values name (a value that names an existing file or
folder, `raw_dir = "/datasets/ptb"`, is keyed by what is there, not only by its text: see
raw_fingerprint). That record, with a fingerprint of the files prepare() wrote, is kept in the
folder as .gitexp-data.json. A run whose code and config match a record uses its folder; one that
matches none prepares a new folder, under a lock, so two runs that need the same new data
prepare it once. Nothing is ever rebuilt in place: other data is another folder.

    python -m gitexp.datastore            # (make data) prepare the data the working tree's code needs
    python -m gitexp.datastore existing   # (make data-ls) the key it would use, preparing nothing
"""
import ast
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

from gitexp.protocol import ConfigError

ROOT = Path("__data__")
MANIFEST = ".gitexp-data.json"
LOCK = ROOT / ".lock"
RAW_HASHED = 64 << 20  # raw files up to this size are keyed by their content; larger ones by size and mtime


class ReadRecorder:
    """The config module as prepare() sees it: every value it reads is noted."""

    def __init__(self, cfg):
        object.__setattr__(self, "_cfg", cfg)
        object.__setattr__(self, "read", {})

    def __getattr__(self, name):
        value = getattr(self._cfg, name)
        self.read[name] = value
        return value

    def __setattr__(self, name, value):
        raise AttributeError(f"prepare() may read config values, not set them (cfg.{name})")


def _digest(data):
    return hashlib.sha256(data).hexdigest()


def _canonical(value):
    return json.dumps(value, sort_keys=True, default=repr)


def code_files(data_module):
    """{path: sha256} of data.py and of the code/ modules and packages it imports, directly or
    through each other: `import x`, `from x import y` (y a submodule too), relative imports,
    each package's __init__.py on the way (config.py apart: prepare()'s reads of it are
    recorded value by value; gitexp apart: the template's, not the data's)."""
    code_dir = Path(data_module.__file__).resolve().parent
    found, todo = {}, [code_dir / "data.py"]
    while todo:
        path = todo.pop()
        name = path.relative_to(code_dir).as_posix()
        if name in found:
            continue
        source = path.read_bytes()
        found[name] = _digest(source)
        for node in ast.walk(ast.parse(source)):
            todo.extend(local_imports(node, path, code_dir))
    return dict(sorted(found.items()))


def local_imports(node, path, code_dir):
    """The files of code/ that one import statement of `path` runs."""
    if isinstance(node, ast.Import):
        dotted = [alias.name.split(".") for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = path.parent.relative_to(code_dir).parts if node.level else ()
        if node.level > 1:
            base = base[:len(base) - (node.level - 1)]
        module = [*base, *(node.module.split(".") if node.module else [])]
        dotted = [module + [alias.name] for alias in node.names]  # y may be a submodule or a name
    else:
        return []
    skip = {code_dir / "config.py", code_dir / "gitexp"}
    files = []
    for parts in dotted:
        for depth in range(1, len(parts) + 1):  # a.b.c runs a/__init__.py, a/b/__init__.py, a/b/c.py
            for candidate in (code_dir.joinpath(*parts[:depth]).with_suffix(".py"),
                              code_dir.joinpath(*parts[:depth], "__init__.py")):
                if candidate.is_file() and not skip & {candidate, *candidate.parents}:
                    files.append(candidate)
    return files


def fingerprint(folder):
    """sha256 over every file's relative path, size and content: computed once, when prepared."""
    total = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name != MANIFEST):
        total.update(f"{path.relative_to(folder).as_posix()}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                total.update(block)
    return total.hexdigest()


def raw_paths(value):
    """The existing files and folders a config value names: a str, or a list or tuple of str,
    relative paths taken from the current directory (a run's is the project's root). A folder
    that holds __data__ itself is left out: every preparation would change it."""
    texts = [value] if isinstance(value, str) else list(value) \
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value) else []
    inside = Path.cwd().resolve() / ROOT
    return [text for text in texts if text and os.path.exists(text)
            and not (os.path.isdir(text) and inside.is_relative_to(Path(text).resolve()))]


def raw_files(top):
    """(name relative to `top`, path) of every regular file under `top` (or `top` itself, a
    file), in name order; links to folders followed, each folder once."""
    if not os.path.isdir(top):
        return [(os.path.basename(top), top)] if os.path.isfile(top) else []
    found, seen = [], set()
    for folder, folders, files in os.walk(top, followlinks=True):
        stat = os.stat(folder)
        if (stat.st_dev, stat.st_ino) in seen:
            folders[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        found += [(os.path.relpath(os.path.join(folder, name), top), os.path.join(folder, name)) for name in files
                  if os.path.isfile(os.path.join(folder, name))]
    return sorted(found)


def raw_fingerprint(value):
    """sha256 over what a config value names (raw_paths), None where it names nothing: each
    file's relative name and size, and its content's sha256 where it is at most RAW_HASHED
    (64 MiB); a larger file counts by its size and modification time (mtime_ns) only, so that
    finding the data again does not read it (a larger file changed in place, its mtime kept,
    goes unnoticed). The small files are read each time the key is looked for."""
    paths = raw_paths(value)
    if not paths:
        return None
    total = hashlib.sha256()
    for text in paths:
        total.update(f"{text}\0".encode())
        for name, path in raw_files(text):
            stat = os.stat(path)
            if stat.st_size <= RAW_HASHED:
                with open(path, "rb") as f:
                    what = hashlib.file_digest(f, "sha256").hexdigest()
            else:
                what = f"mtime {stat.st_mtime_ns}"
            total.update(f"{name}\0{stat.st_size}\0{what}\n".encode())
    return total.hexdigest()


class RawNow:
    """The raw fingerprints of the config values as they are now, each taken once."""

    def __init__(self, cfg):
        self.cfg, self.known = cfg, {}

    def of(self, names):
        """{name: fingerprint} of the names among `names` whose value names a file or folder."""
        for name in names:
            if name not in self.known:
                self.known[name] = raw_fingerprint(getattr(self.cfg, name)) if hasattr(self.cfg, name) else None
        return {name: self.known[name] for name in sorted(names) if self.known[name] is not None}


def manifests():
    """(folder, record) of every prepared data set, oldest first."""
    found = []
    for path in ROOT.glob(f"*/{MANIFEST}") if ROOT.is_dir() else []:
        if path.parent.name.startswith("."):
            continue  # being prepared
        try:
            found.append((path.parent, json.loads(path.read_text())))
        except (OSError, ValueError):
            continue  # not one of ours
    return sorted(found, key=lambda item: item[1].get("prepared", ""))


def config_matches(record, cfg):
    return all(hasattr(cfg, name) and _canonical(getattr(cfg, name)) == _canonical(value)
               for name, value in record.get("config", {}).items())


def matches(record, cfg, files, raw_now=None):
    """Whether a record is of this code, config and raw data (a record from before raw data was
    keyed, without "raw", fits where no value it read names a file or folder)."""
    raw_now = raw_now or RawNow(cfg)
    return record.get("code") == files and config_matches(record, cfg) and \
        record.get("raw", {}) == raw_now.of(record.get("config", {}))


def find(cfg, files, raw_now=None):
    raw_now = raw_now or RawNow(cfg)
    for folder, record in manifests():
        if matches(record, cfg, files, raw_now):
            return folder, record
    return None, None


def raw_changes(record, raw_now):
    """In words, each value whose files differ from those `record` was prepared from."""
    old, now = record.get("raw"), raw_now.of(record.get("config", {}))
    changed = []
    for name in sorted((old or {}).keys() | now.keys()):
        if (old or {}).get(name) == now.get(name):
            continue
        how = ("its files were not fingerprinted when it was prepared" if old is None else
               "it names no file or folder now" if name not in now else
               "it named no file or folder when it was prepared" if name not in old else
               "its files differ from when it was prepared")
        changed.append(f"{name} = {getattr(raw_now.cfg, name, None)!r} ({how})")
    return changed


def why_new(cfg, files, raw_now=None):
    """Why no prepared data set fits: the closest record's difference, in words."""
    records = [record for _, record in manifests()]
    same_code = [r for r in records if r.get("code") == files]
    same_config = [r for r in same_code if config_matches(r, cfg)]
    if same_config:
        return "raw data changed: " + ", ".join(raw_changes(same_config[-1], raw_now or RawNow(cfg)))
    if same_code:
        record = same_code[-1]
        changed = [f"{name} = {getattr(cfg, name, None)!r} (prepared with {value!r})"
                   for name, value in record.get("config", {}).items()
                   if not hasattr(cfg, name) or _canonical(getattr(cfg, name)) != _canonical(value)]
        return "config changed: " + ", ".join(changed)
    if records:
        old = records[-1].get("code", {})
        changed = sorted(name for name in files.keys() | old.keys() if files.get(name) != old.get(name))
        return "code changed: " + ", ".join(changed)
    return "no data prepared yet"


def prepare_new(cfg, data_module, files, raw_now=None):
    """Run prepare() into a hidden folder, record it, then rename it into place. The raw files
    prepare() read are fingerprinted after it ran (a fresh look: RawNow anew)."""
    reason = why_new(cfg, files, raw_now)
    building = ROOT / f".preparing-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    print(f"preparing data ({reason}) ...", flush=True)
    began = time.perf_counter()
    recorder = ReadRecorder(cfg)
    data_module.prepare(recorder, building)
    read = {name: recorder.read[name] for name in sorted(recorder.read)}
    raw = RawNow(cfg).of(read)
    keyed = {"code": files, "config": read, **({"raw": raw} if raw else {})}  # without raw: the keys of old
    key = _digest(_canonical(keyed).encode())[:16]
    record = {"key": key, "code": files, "config": read, "raw": raw, "fingerprint": fingerprint(building),
              "prepared": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(time.perf_counter() - began, 3)}
    (building / MANIFEST).write_text(json.dumps(record, indent=2) + "\n")
    folder = ROOT / key
    if folder.exists():  # made by an interrupted earlier attempt before its record was written
        shutil.rmtree(folder)
    os.replace(building, folder)
    print(f"prepared data in {folder} ({record['seconds']:.1f}s, fingerprint {record['fingerprint'][:12]})", flush=True)
    return folder, record


def listing_fingerprint(*paths):
    """A cheap fingerprint of data that is not prepare()'s, for data.py's fingerprint(cfg):
    sha256 over every file's path relative to the root it was found under, its size and its
    modification time (no content is read). So a faithful copy elsewhere (cp -a, rsync -a)
    matches, and a file changed in place does not."""
    total = hashlib.sha256()
    for number, root in enumerate(map(Path, paths)):
        for path in sorted(p for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file()):
            stat = path.stat()
            name = path.name if path == root else path.relative_to(root).as_posix()
            total.update(f"{number}\0{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return total.hexdigest()


def at_end(cfg, data_module, folder, record, listing):
    """The data's record taken again as a run ends: data.py's fingerprint(cfg) again for your own
    data; for prepared data, its content's fingerprint again only where the folder's listing
    (`listing`, taken at the start) changed, since reading it all costs as much as preparing."""
    if record is None:
        return None
    if folder is None:
        return users_own(cfg, data_module)[1]
    if listing_fingerprint(folder) == listing:
        return record
    return dict(record, fingerprint=fingerprint(folder))


def users_own(cfg, data_module):
    """The record of data prepare() did not make: data.py's fingerprint(cfg), if it has one."""
    if not hasattr(data_module, "fingerprint"):
        return None, None
    return None, {"key": None, "fingerprint": str(data_module.fingerprint(cfg))}


def existing(cfg, data_module):
    """The record ensure() would use, without preparing anything: None where it would prepare."""
    if not hasattr(data_module, "prepare"):
        return users_own(cfg, data_module)[1]
    return find(cfg, code_files(data_module))[1]


def folder_of(record):
    """The prepared folder of a data record (None for data prepare() did not make)."""
    return ROOT / record["key"] if record and record.get("key") else None


def facts(cfg, data_module, folder):
    """data.py's facts(cfg, folder): what the model is sized by (a vocabulary size, a number of
    classes), read from the prepared folder; {} without one. Plain JSON values, recorded."""
    if not hasattr(data_module, "facts"):
        return {}
    answer = data_module.facts(cfg, folder)
    try:
        if not isinstance(answer, dict):
            raise TypeError(type(answer).__name__)
        return json.loads(json.dumps(answer, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"data.py's facts() returned {str(error) or type(answer).__name__}: return a dict of plain "
                          "values (numbers, strings, lists), e.g. {'vocab_size': 10000}") from None


def ensure(cfg, data_module):
    """The folder of the data this code and config need, and its record; prepared if missing.
    Where data.py has no prepare(), the data is the user's own: (None, its fingerprint record
    or None)."""
    if not hasattr(data_module, "prepare"):
        return users_own(cfg, data_module)
    files, raw_now = code_files(data_module), RawNow(cfg)
    folder, record = find(cfg, files, raw_now)
    if folder is not None:
        return folder, record
    ROOT.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # whoever waited here finds what the holder prepared
        folder, record = find(cfg, files, raw_now)
        if folder is not None:
            return folder, record
        for stale in ROOT.glob(".preparing-*"):
            shutil.rmtree(stale, ignore_errors=True)  # an interrupted preparation: the lock is ours
        return prepare_new(cfg, data_module, files, raw_now)


def main():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import config
    import data
    if sys.argv[1:] == ["existing"]:
        record = existing(config, data)
        print(json.dumps({"key": record and record.get("key"), "prepare": hasattr(data, "prepare")}))
        return
    folder, record = ensure(config, data)
    if folder is None:
        print("data.py has no prepare(): the data is your own, nothing to prepare"
              + (f" (fingerprint {record['fingerprint'][:12]})" if record else ""))
    else:
        print(f"data: {folder} (fingerprint {record['fingerprint'][:12]})")


if __name__ == "__main__":
    main()
