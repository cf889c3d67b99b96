"""The shipped search spaces (YAML data files), installed as ``autopeft.search_spaces``.

This folder is what users read and copy; ``pyproject.toml`` maps it into the package so a
wheel or a non-editable install carries the same files (``autopeft/space.py`` finds them
through ``importlib.resources``)."""
