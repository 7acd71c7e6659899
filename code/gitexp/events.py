"""The run's TensorBoard events file (the template's machinery).

TensorBoard's own writer (SummaryWriter) hands every event to a thread of its own, which opens
the file, appends that one event and closes the file again: some 16 us of CPU an event, and a
wake of that thread, on a machine whose cores the training already keeps busy. Here events wait
in memory and reach the file in one append (at each checkpoint, and every few seconds); the
file is the format TensorBoard reads, the one its writer makes: records of an Event each, a
record being the data's length, a masked CRC-32C of the length, the data, a masked CRC-32C of
the data.
"""
import itertools
import os
import socket
import struct
import time
from pathlib import Path

from tensorboard.compat.proto.event_pb2 import Event, SessionLog, TaggedRunMetadata
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from gitexp.files import publish, stage

FILES_OPENED = itertools.count()  # tells apart two files one process opens in the same second


def tensorboard_hparams(hparams, seed, fix):
    """A run's hparams as the HParams tab gets them: from the run's events file (its session)
    and from scripts/tb.py's experiment summary (its columns), so the two agree. Every config
    value, the run's seed and FIX mode. The tab shows a number with five significant digits
    (32 as 32.000) and a string as it is: so an int goes as a string, a float as a number
    (sorted and filtered as one), a bool as a bool, and anything else (None, a list) as text."""
    values = {**hparams, "seed": seed, "fix": fix}
    return {k: v if isinstance(v, (bool, float, str)) else str(v) for k, v in values.items()}


def hparams_summary(tag, **data):
    """A summary of TensorBoard's HParams plugin: experiment=..., session_start_info=... or
    session_end_info=... (not torch's summary.hparams, which gives a bool as a number)."""
    plugin_data = hparams_metadata.create_summary_metadata(HParamsPluginData(**data))
    return Summary(value=[Summary.Value(tag=tag, metadata=plugin_data)])


def tfrecord(data):
    """One record of an events file."""
    length = struct.pack("<Q", len(data))
    return b"".join((length, struct.pack("<I", masked_crc32c(length)), data, struct.pack("<I", masked_crc32c(data))))


def records(data):
    """(start, end) of each whole record in an events file's bytes; a torn last one (a write a
    kill cut short) is left out."""
    offset = 0
    while offset + 12 <= len(data):
        end = offset + 12 + struct.unpack_from("<Q", data, offset)[0] + 4
        if end > len(data):
            return
        yield offset, end
        offset = end


def drop_past(folder, step):
    """Rewrite the events files in `folder` without the summaries logged past `step` (and a torn
    last record): what a killed run wrote after the checkpoint a continue goes on from. So every
    reader (pandas over tbparse, the report), not only TensorBoard's purge, sees one point per
    curve and step."""
    for path in sorted(Path(folder).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        kept = [data[start:end] for start, end in records(data) if not logged_past(data[start:end], step)]
        if sum(map(len, kept)) != len(data):
            publish(stage(path, b"".join(kept)), path)


def scalars(folder, prefix="step/"):
    """{(name, step): value} of the scalars whose names start with `prefix` in a run's events
    files, read in the files' order (a later point of a name and step replaces an earlier one)."""
    found = {}
    for path in sorted(Path(folder).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        for start, end in records(data):
            event = Event.FromString(data[start + 12:end - 4])
            for value in event.summary.value if event.WhichOneof("what") == "summary" else ():
                if value.tag.startswith(prefix) and value.WhichOneof("value") == "simple_value":
                    found[value.tag, event.step] = value.simple_value
    return found


def logged_past(record, step):
    """Whether a record is a summary (scalars, text) of a step after `step`."""
    event = Event.FromString(record[12:-4])
    return event.step > step and event.WhichOneof("what") == "summary"


class EventFile:
    """A new events file in `folder` (one each start of a run), its name ending in `suffix`.
    With `purge_step`, TensorBoard hides what the run's earlier files hold from that step on:
    what a killed run logged past the checkpoint it is continued from."""

    def __init__(self, folder, purge_step=None, suffix=""):
        Path(folder).mkdir(parents=True, exist_ok=True)
        # SummaryWriter's naming: TensorBoard reads a run's files in the order of their names
        name = (f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}."
                f"{next(FILES_OPENED)}{suffix}")
        self.file = open(Path(folder) / name, "xb")
        self.pending = []
        self.add(Event(file_version="brain.Event:2"))
        if purge_step is not None:
            self.add(Event(step=purge_step, session_log=SessionLog(status=SessionLog.START)))

    def add(self, event, wall_time=None):
        event.wall_time = time.time() if wall_time is None else wall_time
        self.pending.append(tfrecord(event.SerializeToString()))

    def summary(self, summary, step, wall_time=None):
        self.add(Event(summary=summary, step=step), wall_time)

    def scalars(self, step, values, wall_time=None):
        """One event for all of a step's scalars: [(tag, value)]."""
        self.summary(Summary(value=[Summary.Value(tag=tag, simple_value=value) for tag, value in values]),
                     step, wall_time)

    def graph(self, graph_def, run_metadata):
        """The model's graph, as torch.utils.tensorboard traces it."""
        self.add(Event(graph_def=graph_def.SerializeToString()))
        self.add(Event(tagged_run_metadata=TaggedRunMetadata(tag="step1", run_metadata=run_metadata.SerializeToString())))

    def write(self):
        """Append the events added so far (to the OS; close() puts them on disk)."""
        if self.pending:
            self.file.write(b"".join(self.pending))
            self.file.flush()
            self.pending = []

    def close(self):
        self.write()
        os.fsync(self.file.fileno())
        self.file.close()
