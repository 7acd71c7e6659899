"""The template's machinery — not yours to edit: resume, every RNG, checkpoints, statistic.json,
TensorBoard, torchrun/DDP, prepared data and crash-safe files. code/main.py calls it.

Your files are the ones in YOURS (README, "Make it yours"): whatever they change, nothing
here needs to.
"""
YOURS = ("config.py", "seed", "data.py", "model.py", "task.py", "requirements.txt")
