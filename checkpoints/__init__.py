"""The weights bdn ships (safetensors), installed as package data: `importlib.resources.files("bdn.checkpoints")`.

This file makes the top-level `checkpoints/` folder the subpackage `bdn.checkpoints` (see pyproject.toml).
"""
