"""What a task makes besides numbers: the pictures and texts evaluate returns (gitexp.media), in
TensorBoard and as files, and the files it writes into its run's own folder (gitexp.run_dir())."""
import io
import json
import re
import subprocess
import sys

import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import copy_project


def board(folder):
    events = EventAccumulator(str(folder / "tensorboard"), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    events.Reload()
    return events


def media_files(folder, name):
    return sorted((folder / "media" / name).iterdir(), key=lambda path: int(path.stem))


def test_each_evaluations_pictures_reach_tensorboard_and_files(project):
    project.make("run", TAG="m", FIX="1")
    folder = project.result("m", 0)
    events = board(folder)
    steps = [event.step for event in events.Scalars("val/loss")]
    assert len(steps) == 3  # one evaluation an epoch
    for name in ("val_confusion", "test_confusion"):
        images = events.Images(name.replace("_", "/", 1))
        files = media_files(folder, name)
        assert [image.step for image in images] == steps
        assert [path.name for path in files] == [f"{step}.png" for step in steps]
        for image, path in zip(images, files):
            assert image.encoded_image_string == path.read_bytes()
            picture = Image.open(io.BytesIO(path.read_bytes()))
            assert picture.size == (120, 120) and picture.mode == "RGB"
    # a picture is no metric: not in the record, not a column of the title
    statistic = project.statistic("m", 0)
    assert "confusion" not in json.dumps(statistic["metrics"])
    project.make("record", EXP="m/0")
    project.make("title")
    assert "confusion" not in (project.path / "__statistic__" / "title" / "record.json").read_text()


@pytest.fixture
def charlm(pristine_charlm, tmp_path):
    return copy_project(pristine_charlm, tmp_path, "charlm")


def test_a_generated_text_reaches_tensorboards_text_tab_and_a_file(charlm):
    charlm.make("run", TAG="t", FIX="1")
    folder = charlm.result("t", 0)
    events = board(folder)
    steps = [event.step for event in events.Scalars("val/loss")]
    texts = events.Tensors("val/sample/text_summary")
    files = media_files(folder, "val_sample")
    assert [text.step for text in texts] == steps and [path.name for path in files] == [f"{s}.txt" for s in steps]
    for text, path in zip(texts, files):
        written = path.read_text(encoding="utf-8")
        assert written.startswith("def ") and len(written) == 44
        assert text.tensor_proto.string_val[0].decode("utf-8") == written


OWN_FILES = '''

def after_evaluation(metrics, optimizer):
    import gitexp
    folder = gitexp.run_dir()
    if folder is None:
        print("no run folder: nothing recorded")
    else:
        (folder / f"val_acc_{metrics['epoch']}.txt").write_text(str(metrics["val_acc"]))
'''


def test_the_files_a_task_writes_into_its_run_dir_are_part_of_the_run(project):
    with open(project.path / "code" / "task.py", "a") as task:
        task.write(OWN_FILES)
    project.git("commit", "-qam", "write a file per evaluation")
    project.make("run", TAG="own")
    files = project.result("own", 0) / "files"
    assert sorted(p.name for p in files.iterdir()) == ["val_acc_1.txt", "val_acc_2.txt", "val_acc_3.txt"]
    assert float((files / "val_acc_3.txt").read_text()) == project.statistic("own", 0)["metrics"]["last"]["val_acc"]
    assert "3 own files" in project.make("ls", TAG="own").stdout
    # nothing records: make check and main.py alone get None, and write nothing
    before = project.snapshot()
    assert "check passed" in project.make("check").stdout
    alone = subprocess.run([sys.executable, "code/main.py"], cwd=project.path, env=project.env, capture_output=True,
                           text=True, check=True)
    assert alone.stdout.count("no run folder: nothing recorded") == 3
    assert project.snapshot() == before
    # moved to the trash with the run, and back
    project.make("rm", EXP="own/0")
    assert not files.exists()
    project.make("restore", EXP="own/0")
    assert sorted(p.name for p in files.iterdir()) == ["val_acc_1.txt", "val_acc_2.txt", "val_acc_3.txt"]


def test_each_kind_of_picture_becomes_an_rgb_array_and_a_wrong_one_is_one_line():
    import numpy as np
    import torch
    from matplotlib.figure import Figure

    from gitexp import media
    from gitexp.protocol import ConfigError

    figure = Figure(figsize=(2, 1), dpi=50)
    figure.add_subplot().plot([0, 1], [1, 0])
    counts = torch.tensor([[8, 0], [2, 6]])
    for picture, shape in [(counts, (2, 2, 3)), (torch.rand(3, 5, 7), (5, 7, 3)), (np.zeros((5, 7, 4)), (5, 7, 4)),
                           (torch.rand(16, 1, 8, 8), (38, 38, 3)), (np.zeros((3, 8, 8, 3)), (18, 18, 3)),
                           (figure, (50, 100, 3)), (Image.new("L", (7, 5)), (5, 7, 3))]:
        assert media.pixels(picture, "p").shape == shape and media.pixels(picture, "p").dtype == np.uint8
    assert media.pixels(counts, "p")[..., 0].tolist() == [[255, 0], [64, 191]]  # counts scaled to their range
    assert media.pixels(torch.tensor([[0.0, 0.5]]), "p")[..., 0].tolist() == [[0, 128]]  # [0, 1] as it is
    for wrong, said in [(torch.rand(2, 2, 5, 5), "media.Image of shape (2, 2, 5, 5) as 'w'"),
                        ("a path.png", "media.Image(str) as 'w': give a tensor or NumPy array"),
                        (torch.zeros(0, 4), "media.Image of shape (0, 4) as 'w'")]:
        with pytest.raises(ConfigError, match=re.escape(said)):
            media.pixels(wrong, "w")
    with pytest.raises(ConfigError, match=re.escape("media.Text(int) as 's': give a str")):
        media.prepared(media.Text(3), "s")
    with pytest.raises(ConfigError, match=re.escape("a medium named 'samples/grid': name it with letters")):
        media.prepared(media.Image(counts), "samples/grid")
