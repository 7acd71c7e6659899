"""make tb, make tb-stop and the live TensorBoard of make run, asked over HTTP as the browser
asks them. Four real experiments (a/0 a/1 b/0 b/1) are made once for the module, by runs
started two at a time with TB=1, so they also show that runs share one live server."""
import json
import os
import re
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from tensorboard import manager

from conftest import assert_refused, copy_project, kill_group, wait_for

LIVE_URL = re.compile(r"TensorBoard \(live, all experiments\): http://127\.0\.0\.1:([0-9]+)/")
SCALARS = {"step/loss", "step/acc", "step/lr", "train/loss", "train/acc", "train/lr", "val/loss", "val/acc",
           "test/loss", "test/acc"}


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(port, route, body=None, host="127.0.0.1"):
    """GET a route, or POST `body` as JSON (the hparams plugin's routes), and decode the JSON."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{host}:{port}{route}", data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def runs(port):
    """The runs TensorBoard serves, but for the folder of the HParams tab's experiment summary."""
    return sorted(run for run in get(port, "/data/runs") if not run.startswith("~hparams-"))


def experiment(port):
    return get(port, "/data/plugin/hparams/experiment", {"experimentName": ""})


def live_servers(project):
    """tensorboard.manager's entries for the project's live server that are still running."""
    logdir = str((project.path / "__statistic__" / "tb" / "live").resolve())
    return [info for info in manager.get_all() if info.logdir == logdir and alive(info.pid)]


def alive(pid):
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def stop_live(project):
    project.make("tb-stop", check=False)
    for info in live_servers(project):
        os.kill(info.pid, 9)


def sessions(port):
    """The HParams tab's table: one group per run, with its hparams and metric values."""
    groups = get(port, "/data/plugin/hparams/session_groups", {
        "experimentName": "", "startIndex": 0, "sliceSize": 100, "colParams": [],
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
    })["sessionGroups"]
    return {g["name"]: g for g in groups}


def stop(server):
    """SIGTERM first: TensorBoard then removes its info file (tensorboard.manager's list)."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            kill_group(server)


@pytest.fixture(scope="module")
def experiments(pristine, tmp_path_factory):
    """A project with a/0 a/1 b/0 b/1, made two runs at a time with the live TensorBoard on;
    returns it and the runs' stdout."""
    project = copy_project(pristine, tmp_path_factory.mktemp("tensorboard"))
    outputs = []
    project.side_by_side()
    try:
        for _ in range(2):
            runs = [project.start("run", TAG=tag, TB="1") for tag in ("a", "b")]
            for run in runs:
                out, err = run.communicate(timeout=300)
                assert run.returncode == 0, out + err
                outputs.append(out)
        yield project, outputs
    finally:
        stop_live(project)


@pytest.fixture(scope="module")
def compare(experiments):
    """make tb TAGS="a b/0" on a free port, serving once TensorBoard has read every run."""
    project, _ = experiments
    port = free_port()
    server = project.start("tb", TAGS="a b/0", PORT=port)
    try:
        wait_for(lambda: len(ready(port)) == 3, timeout=60, interval=0.2)
        yield project, server, port
    finally:
        stop(server)


def ready(port):
    """The runs whose hparams TensorBoard has read (none while it starts up, nor before it has
    read the experiment summary that orders the HParams tab's columns: ~best/<monitor> first)."""
    try:
        if not experiment(port).get("metricInfos", [{}])[0].get("name", {}).get("tag", "").startswith("~best/"):
            return set()
        return {name for name, g in sessions(port).items() if g["hparams"]}
    except (urllib.error.URLError, ConnectionError):
        return set()


def test_tb_serves_the_named_runs_with_scalars_hparams_and_graph(compare):
    project, _, port = compare
    assert runs(port) == ["a/0", "a/1", "b/0"]
    tags = get(port, "/data/plugin/scalars/tags")
    assert set(tags) == {"a/0", "a/1", "b/0"}
    for run in tags:
        assert SCALARS <= set(tags[run]), tags[run]
        # the Time Series page orders cards by their tags' character codes and opens on the
        # first: the curves, and after every one of them the single-point best/last values
        order = sorted(tags[run])
        finals = [name for name in order if name.startswith(("~best/", "~last/"))]
        assert finals and order[-len(finals):] == finals and order[0].startswith("step/"), order
    statistic = project.statistic("a", 1)
    points = get(port, "/data/plugin/scalars/scalars?run=a/1&tag=val/acc")  # the example's metric
    per_epoch = points[0][1]  # epoch scalars are logged at the global step
    assert per_epoch > 1 and [p[1] for p in points] == [per_epoch, 2 * per_epoch, 3 * per_epoch]
    assert points[-1][2] == pytest.approx(statistic["metrics"]["last"]["val_acc"], rel=1e-6)
    graphs = get(port, "/data/plugin/graphs/info")
    assert all(graphs[run]["run_graph"] for run in ("a/0", "a/1", "b/0")), graphs

    # the HParams tab: every config value, the seed and FIX mode, and every curve, best/last
    # values too; its table ticks the first five metrics: the monitored best and the evaluation
    # sets' latest values, not the step scalars (TensorBoard's own order: the tags')
    summary = experiment(port)
    assert {h["name"] for h in summary["hparamInfos"]} == set(statistic["hparams"]) | {"seed", "fix"}
    assert summary["hparamInfos"][0]["name"] == "seed"  # the one that differs: first, and ticked
    metrics = [m["name"]["tag"] for m in summary["metricInfos"]]
    assert metrics[:5] == ["~best/val_acc", "val/acc", "val/loss", "test/acc", "test/loss"], metrics
    assert set(metrics) == set(tags["a/1"]) and metrics[-3:] == ["step/loss", "step/acc", "step/lr"], metrics
    groups = sessions(port)
    assert set(groups) == {"a/0", "a/1", "b/0"}
    for name, group in groups.items():
        tag, number = name.split("/")
        statistic = project.statistic(tag, int(number))
        assert [s["name"] for s in group["sessions"]] == [name]
        # shown as written: an int as a string (a number would show as 32.000), a bool as a bool
        recorded = {**statistic["hparams"], "seed": statistic["seed"], "fix": statistic["fix"]}
        expected = {k: v if isinstance(v, (str, bool, float)) else str(v) for k, v in recorded.items()}
        assert {k: (type(v), v) for k, v in group["hparams"].items()} == {k: (type(v), v) for k, v in expected.items()}
        assert group["hparams"]["hidden"] == "32" and group["hparams"]["seed"] == str(statistic["seed"])
        assert group["hparams"]["fix"] is False and group["hparams"]["init_resume"] is False
        values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        for when in ("best", "last"):
            for key, value in statistic["metrics"][when].items():
                assert values[f"~{when}/{key}"] == pytest.approx(value, rel=1e-6), (name, when, key)


def test_tb_listens_on_loopback_only(compare):
    _, _, port = compare
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                listening.append(local.rsplit(":", 1)[0])
    assert listening == ["0100007F"], listening  # 127.0.0.1 and nothing else
    # 127.0.0.2 is loopback too: only a socket bound to every address would answer there
    for host in ["127.0.0.2", *others()]:
        with pytest.raises(OSError):
            socket.create_connection((host, port), timeout=2).close()


def others():
    """This machine's addresses that are not loopback."""
    try:
        found = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    except socket.gaierror:
        return []
    return sorted(a for a in found if not a.startswith("127."))


def test_tb_prints_its_url_and_stops(compare):
    project, server, port = compare
    stop(server)
    out = server.stdout.read()
    assert f"TensorBoard: http://127.0.0.1:{port}/ (3 run(s): a/0 a/1 b/0)" in out
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_tb_without_tags_shows_every_experiment(experiments):
    project, _ = experiments
    server = project.start("tb")  # no PORT: the first free from 6006
    try:
        line = server.stdout.readline()
        port = int(re.search(r"http://127\.0\.0\.1:([0-9]+)/", line)[1])
        assert port >= 6006
        wait_for(lambda: len(ready(port)) == 4, timeout=60, interval=0.2)
        assert runs(port) == ["a/0", "a/1", "b/0", "b/1"]
    finally:
        stop(server)


def test_tb_shows_the_runs_of_a_list(experiments):
    """LIST=name: the runs a list names (a sweep keeps one), a bare tag meaning all its ids."""
    project, _ = experiments
    (project.path / "__statistic__" / "exper-list").mkdir(parents=True, exist_ok=True)
    (project.path / "__statistic__" / "exper-list" / "mine.txt").write_text("a/1\nb\n")
    port = free_port()
    server = project.start("tb", LIST="mine", PORT=port)
    try:
        wait_for(lambda: len(ready(port)) == 3, timeout=60, interval=0.2)
        assert runs(port) == ["a/1", "b/0", "b/1"]
    finally:
        stop(server)


def test_runs_share_one_live_server_that_outlives_them(experiments):
    project, outputs = experiments
    ports = {LIVE_URL.search(out)[1] for out in outputs if LIVE_URL.search(out)}
    assert len(ports) == 1 and all(LIVE_URL.search(out) for out in outputs), outputs
    servers = live_servers(project)
    assert [str(s.port) for s in servers] == list(ports)
    port, pid = servers[0].port, servers[0].pid
    wait_for(lambda: len(ready(port)) == 4, timeout=60, interval=0.2)
    assert runs(port) == ["a/0", "a/1", "b/0", "b/1"]  # named tag/id
    assert [m["name"]["tag"] for m in experiment(port)["metricInfos"]][0] == "~best/val_acc"

    # killing a run's process group (as Ctrl+C would the foreground job) leaves the server up,
    # and the next run reuses it
    run = project.start("run", TAG="k", TB="1")
    wait_for(lambda: any((project.result("k", 0) / "tensorboard").glob("events.*")), timeout=60)
    kill_group(run)
    assert LIVE_URL.search(run.stdout.read())[1] == str(port)
    assert [(s.port, s.pid) for s in live_servers(project)] == [(port, pid)]
    wait_for(lambda: "k/0" in get(port, "/data/runs"), timeout=30, interval=0.2)
    # k's start wrote the experiment summary anew (a/1 and b/1 had not begun training when the
    # last one was written): the server serves it, the older one gone
    seeds = {str(project.statistic(tag, number)["seed"]) for tag in ("a", "b") for number in (0, 1)}
    wait_for(lambda: seeds <= set(seed_domain(port)), timeout=30, interval=0.2)
    summaries = [run for run in get(port, "/data/runs") if run.startswith("~hparams-")]
    assert len(summaries) == 1 and [p.name for p in (project.path / "__statistic__/tb/live").glob("~*")] == summaries

    stopped = project.make("tb-stop")
    assert f"stopped the live TensorBoard (pid {pid}, port {port})" in stopped.stdout
    assert not alive(pid) and live_servers(project) == []
    assert "no live TensorBoard is running" in project.make("tb-stop").stdout


def seed_domain(port):
    return next(h for h in experiment(port)["hparamInfos"] if h["name"] == "seed")["domainDiscrete"]


def test_tb_off_starts_no_server(project):
    run = project.start("run", TAG="quiet")  # TB=0 by default in tests
    wait_for(lambda: (project.result("quiet", 0) / "log").exists(), timeout=60)  # main.py started
    kill_group(run)
    assert "TensorBoard" not in run.stdout.read() + run.stderr.read()
    assert live_servers(project) == [] and not (project.path / "__statistic__" / "tb").exists()


@pytest.mark.parametrize("variables, fragment", [
    ({"TAGS": "zz"}, "no experiment of tag zz"),
    ({"TAGS": "a/9"}, "no experiment a/9"),
    ({"TAGS": "a b/x"}, "'b/x' is not a tag"),
    ({"TAGS": "a;touch pwned"}, "'a;touch' is not a tag"),
    ({"TAGS": "$(touch pwned)"}, "is not a tag"),
    ({"TAGS": "../a"}, "is not a tag"),
    ({"PORT": "0"}, "PORT='0' is not a port"),
    ({"PORT": "65536"}, "is not a port"),
    ({"PORT": "http"}, "is not a port"),
    ({"PORT": "-1"}, "is not a port"),
    ({"PORT": "6006;id"}, "is not a port"),
    ({"HOST": "bad host"}, "is not a host name or IP address"),
    ({"HOST": "x`id`"}, "is not a host name or IP address"),
    ({"HOST": "203.0.113.7"}, "is not an address of this machine"),
])
def test_tb_refuses_bad_input(experiments, variables, fragment):
    project, _ = experiments
    before = project.snapshot()
    result = project.make("tb", check=False, timeout=30, **variables)
    assert_refused(result, fragment)
    assert project.snapshot() == before
    assert not (project.path / "pwned").exists()


def test_tb_refuses_a_port_in_use(experiments):
    project, _ = experiments
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_refused(project.make("tb", check=False, timeout=30, TAGS="a", PORT=port), f"PORT={port} is in use")


def test_tb_refuses_a_project_without_experiments(project):
    assert_refused(project.make("tb", check=False, timeout=30), "no experiments in __result__/")


def test_a_continue_starts_the_live_server_only_once_main_py_accepted_it(project):
    """The handshake of gitexp/protocol.py: a continue's TensorBoard waits for main.py's
    STARTED file, not for its first line of output. Here data.py prints as it loads, before
    main.py refuses the continue (no readable checkpoint): no server starts. Accepted (the
    checkpoints back), the continue starts one."""
    data = project.path / "code" / "data.py"
    data.write_text('print("data.py loaded")\n' + data.read_text())
    project.git("commit", "-qam", "data.py says when it loads")
    project.make("run", TAG="h")
    folder = project.result("h", 0)
    (folder / "statistic.json").write_text(json.dumps(dict(project.statistic("h", 0), status="failed")))
    checkpoints = sorted((folder / "checkpoint").glob("epoch_[0-9]*.pth"))
    kept = {path: path.read_bytes() for path in checkpoints}
    for path in checkpoints:
        path.write_bytes(b"garbage")
    refused = project.make("continue", TAG="h", TB="1", check=False)
    assert_refused(refused, "no readable checkpoint")
    assert "data.py loaded" in refused.stdout  # printed before the refusal, as data preparation can
    assert live_servers(project) == [] and not (project.path / "__statistic__" / "tb").exists()
    assert not list(folder.glob(".st*"))  # no handshake file left behind

    for path, content in kept.items():
        path.write_bytes(content)
    checkpoints[-1].unlink()  # the last epoch goes again
    try:
        accepted = project.make("continue", TAG="h", TB="1")
        assert LIVE_URL.search(accepted.stdout)
        wait_for(lambda: len(live_servers(project)) == 1, timeout=60, interval=0.2)  # it registers as it comes up
    finally:
        stop_live(project)
    assert project.statistic("h", 0)["status"] == "finished"
    assert not list(folder.glob(".st*")) and not (folder / ".error").exists()
