"""torchrun as the launcher starts it (the template's machinery): torch.distributed.run's own
main, whose report of a run that stopped on request (every worker exited protocol.STOPPED, or
torchrun itself was told to stop) is an exit status, not a traceback. A failure keeps its
report (which rank, which exit status), without the traceback of torchrun's own frames.

    python <run>/code/gitexp/torchrun.py --nproc-per-node=2 ... <run>/code/main.py   # as torchrun
"""
import logging
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # code/: the run's own gitexp

from torch.distributed.elastic.multiprocessing.api import SignalException  # noqa: E402
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError  # noqa: E402
from torch.distributed.run import main  # noqa: E402

from gitexp import protocol  # noqa: E402

# a worker torchrun ended while it stopped the others (its SIGTERM, after one exited 75)
ENDED_BY_TORCHRUN = {-signal.SIGTERM, -signal.SIGINT, protocol.STOPPED}


def run():
    # "Sending process ... closing signal SIGTERM" to a rank still on its way out once another
    # stopped: torchrun's warnings are not the run's; its errors still show
    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)
    try:
        main()
    except ChildFailedError as error:
        codes = {failure.exitcode for failure in error.failures.values()}
        if protocol.STOPPED in codes and codes <= ENDED_BY_TORCHRUN:
            sys.exit(protocol.STOPPED)
        print(str(error).strip(), file=sys.stderr)
        sys.exit(protocol.FAILED)
    except SignalException:  # torchrun itself was signalled: its workers were too, and stopped
        sys.exit(protocol.STOPPED)


if __name__ == "__main__":
    run()
