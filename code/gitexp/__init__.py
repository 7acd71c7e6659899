"""The template's machinery — not yours to edit: resume, every RNG, checkpoints, statistic.json,
TensorBoard, torchrun/DDP, prepared data and crash-safe files. code/main.py calls it.

Your files are the ones in YOURS (README, "Make it yours"): whatever they change, nothing
here needs to.
"""
YOURS = ("config.py", "seed", "data.py", "model.py", "task.py", "requirements.txt")


def run_dir():
    """A folder of the recorded run for your task's own files (predictions, exports), made on first
    use: __result__/<tag>/<id>/files/, part of the run for make rm, restore, ls and diff. None
    where nothing records (make check, `python code/main.py` alone, make eval). Every rank gets
    it: write from rank 0, or under names of your ranks."""
    from gitexp import protocol
    from gitexp.layout import OWN_FILES

    folder = protocol.folder()
    if folder is None or protocol.check_epoch() is not None:
        return None
    (folder / OWN_FILES).mkdir(exist_ok=True)
    return folder / OWN_FILES
