"""The git repository a run's code comes from: tags, commits, the clean tree, a tag's code and
seed. Every git command of the launcher goes through git(). Standard library only.
"""
import getpass
import io
import socket
import subprocess
import tarfile
from pathlib import Path

from cli import UserError
from names import NAME_RULE, NUMBER, is_tag


def git(*args, check=True, identity=False):
    """Run git; with `identity`, fall back to a local name and e-mail where git has none
    (a fresh machine), since annotated tags and commits need one."""
    command = ["git"]
    if identity:
        for key, fallback in (("user.name", getpass.getuser()),
                              ("user.email", f"{getpass.getuser()}@{socket.gethostname()}")):
            if subprocess.run(["git", "config", key], capture_output=True).returncode != 0:
                command += ["-c", f"{key}={fallback}"]
    result = subprocess.run(command + list(args), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise UserError(f"git {args[0]} failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
    return result


def commit_of(ref):
    result = git("rev-parse", "-q", "--verify", f"{ref}^{{commit}}", check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def describe(commit):
    return git("log", "-1", "--format=%h (%s)", commit).stdout.strip()


def check_tag(tag):
    if not tag:
        raise UserError("TAG is missing: name the experiment, e.g. make run TAG=baseline")
    if not is_tag(tag):
        raise UserError(f"TAG {tag!r} is not a valid tag: {NAME_RULE}")
    if git("check-ref-format", f"refs/tags/{tag}", check=False).returncode != 0:
        raise UserError(f"TAG {tag!r} is not a valid git tag name (git check-ref-format): choose another")
    if tag == "HEAD" or commit_of(f"refs/heads/{tag}") is not None:
        raise UserError(f"TAG {tag!r} is the name of a branch: a tag of that name would shadow it, choose another")
    return tag


def existing_tag(tag):
    commit = commit_of(f"refs/tags/{tag}")
    if commit is None:
        raise UserError(f"unknown tag {tag}: no git tag of that name (make ls lists the experiments)")
    return commit


def check_tag_free(tag, message):
    """Before anything is committed: would HEAD, after a MSG commit, be where tag `tag` is?"""
    tagged, head = commit_of(f"refs/tags/{tag}"), commit_of("HEAD")
    if tagged is None or head is None:
        return
    will_commit = message and git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    if tagged != head or will_commit:
        raise UserError(f"tag {tag} is at {describe(tagged)}, not at {'the commit MSG would make' if tagged == head else 'HEAD ' + describe(head)}: "
                        f"choose a new TAG, or reproduce {tag} with make rerun TAG={tag}")


def tag_head(tag):
    """Tag HEAD as `tag`; reuse it where it already marks HEAD."""
    head = commit_of("HEAD")
    for _ in range(2):  # a second pass covers a run that created the same tag a moment ago
        tagged = commit_of(f"refs/tags/{tag}")
        if tagged == head:
            return head
        if tagged is not None:
            raise UserError(f"tag {tag} is at {describe(tagged)}, not at HEAD {describe(head)}: "
                            f"choose a new TAG, or reproduce {tag} with make rerun TAG={tag}")
        git("tag", "--annotate", "--message", f"gitexp experiment {tag}", tag, head, check=False, identity=True)
    raise UserError(f"could not create tag {tag}: see git tag -l {tag}")


def ensure_clean_tree(message):
    """Refuse uncommitted changes to tracked files, or commit them with MSG. Untracked files
    are never touched."""
    if commit_of("HEAD") is None:
        raise UserError("this repository has no commit yet: commit your code first (git add -A && git commit -m ...)")
    changed = git("status", "--porcelain", "--untracked-files=no").stdout.splitlines()
    if not changed:
        return
    if not message:
        files = ", ".join(line[3:] for line in changed[:10]) + (" ..." if len(changed) > 10 else "")
        raise UserError(f"uncommitted changes to tracked files ({files}): commit them, "
                        f"or give MSG=\"...\" to commit them before the run")
    git("commit", "--quiet", "--all", "--message", message, identity=True)
    print(f"committed {len(changed)} changed file(s): {describe('HEAD')}")


def check_runnable():
    """Before anything is committed or tagged: code/main.py is tracked (what MSG would commit
    is what the working tree holds)."""
    if git("ls-files", "--error-unmatch", "code/main.py", check=False).returncode != 0:
        raise UserError("code/main.py is not committed: commit the experiment's code under code/")


def snapshot(tag, folder):
    """Extract the tag's code/ into the experiment folder: the run executes exactly that."""
    if (folder / "code" / "main.py").exists():
        return
    extract_code(f"refs/tags/{tag}", folder)


def extract_code(ref, folder):
    """Extract the code/ of `ref` (a tag or a commit) into `folder`."""
    archive = subprocess.run(["git", "archive", "--format=tar", ref, "--", "code"], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")


def fixed_seed():
    """The seed FIX=1 uses: code/seed, committed (or about to be, with MSG)."""
    tracked = git("ls-files", "--error-unmatch", "code/seed", check=False).returncode == 0
    text = Path("code/seed").read_text().strip() if tracked and Path("code/seed").is_file() else ""
    if not NUMBER.fullmatch(text):
        raise UserError(f"code/seed must hold one non-negative integer for FIX=1, not {text[:20]!r}: fix it and commit")
    return int(text)


def tag_seed(tag):
    """The seed FIX=1 uses for a run of an existing tag: the tag's own code/seed."""
    shown = git("show", f"refs/tags/{tag}:code/seed", check=False)
    text = shown.stdout.strip() if shown.returncode == 0 else ""
    if not NUMBER.fullmatch(text):
        raise UserError(f"tag {tag} has no code/seed holding one non-negative integer: FIX=1 needs it")
    return int(text)
