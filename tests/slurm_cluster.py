"""A private Slurm for the tests: slurmctld and two slurmd on this host (two nodes), munged,
all started as root from a config in a temp folder, no systemd, stopped by pid.

Debian's slurm-wlm is built without --enable-multiple-slurmd, but two slurmd with their own
NodeName (-N), port, spool and pid file run side by side on 127.0.0.1 all the same. Each node
claims the host's CPUs (SlurmdParameters=config_overrides); task/affinity binds each job to its CPUs,
so the thread count (a share of the CPUs a process may use) follows --cpus-per-task. AuthInfo=cred_expire=5: a requeued
job is held until the job credential expires (BeginTime, 121 s by default), here 6 s. A job of the
partition urgent preempts the default partition's jobs: SIGTERM to every process of theirs, 20 s
of grace, then SIGKILL and a requeue (PreemptMode=REQUEUE), as a cluster's preemption does.
"""
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

NODES = ("n0", "n1")


def installed():
    return all(shutil.which(name) for name in ("slurmctld", "slurmd", "sbatch", "munged"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(folder, cpus):
    ports = [free_port() for _ in range(len(NODES) + 1)]
    nodes = "\n".join(f"NodeName={name} NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1 Port={port} "
                      f"CPUs={cpus} State=UNKNOWN" for name, port in zip(NODES, ports[1:]))
    return f"""ClusterName=gitexp
SlurmctldHost={socket.gethostname()}(127.0.0.1)
SlurmctldPort={ports[0]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=5
CryptoType=crypto/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool-%n
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd-%n.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
JobRequeue=1
MinJobAge=600
ReturnToService=2
SchedulerParameters=sched_interval=2
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
KillWait=10
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
{nodes}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO PriorityTier=1 GraceTime=20
PartitionName=urgent Nodes=ALL MaxTime=INFINITE State=UP OverSubscribe=NO PriorityTier=2 PreemptMode=OFF
"""


class Cluster:
    def __init__(self, folder, cpus=2):
        self.folder = Path(folder)
        self.conf = self.folder / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self.pids = []
        (self.folder / "state").mkdir(parents=True, exist_ok=True)
        self.conf.write_text(config(self.folder, cpus))

    def start(self):
        munge = Path("/run/munge")
        munge.mkdir(parents=True, exist_ok=True)
        shutil.chown(munge, "munge", "munge")
        if subprocess.run(["munge", "-n"], capture_output=True).returncode != 0:
            # its pid file where the munge user may write: pytest's temp folder is root's alone
            pidfile = munge / f"gitexp-tests-{os.getpid()}.pid"
            subprocess.run(["runuser", "-u", "munge", "--", "munged", "--pid-file", str(pidfile)], check=True)
            self.pids.append(pidfile)
        subprocess.run(["slurmctld", "-f", str(self.conf)], env=self.env, check=True)
        self.pids.append(self.folder / "slurmctld.pid")
        for name in NODES:
            (self.folder / f"spool-{name}").mkdir(exist_ok=True)
            subprocess.run(["slurmd", "-f", str(self.conf), "-N", name], env=self.env, check=True)
            self.pids.append(self.folder / f"slurmd-{name}.pid")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = self.run("sinfo", "-h", "-N", "-p", "debug", "-o", "%t").split()  # a node a line
            if len(states) == len(NODES) and all(s in ("idle", "mix", "alloc") for s in states):
                return self
            time.sleep(0.5)
        self.stop()  # no daemon left behind for the next try
        raise AssertionError(f"Slurm's nodes did not come up: {self.run('sinfo', '-N')}\n{self.log()}")

    def run(self, *command, check=False):
        return subprocess.run(command, env=self.env, capture_output=True, text=True, check=check).stdout

    def log(self):
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.folder.glob("*.log")))

    def stop(self):
        for pidfile in reversed(self.pids):
            try:
                os.kill(int(pidfile.read_text().split()[0]), 15)
            except (OSError, ValueError):
                pass
