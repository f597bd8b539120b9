"""Importing a user's module named in a suite or on the command line (``my_module:function``).

Like pytest with its rootdir, the current folder is searched too, and stays on ``sys.path``
so that spawned workers find the module as well. (``methods.registry`` keeps its own copy of
this rule until its next change of code, which re-runs every committed report.)
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType


def import_user_module(module_name: str) -> ModuleType:
    """Import ``module_name``, from the current folder too."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        here = os.getcwd()
        if err.name != module_name.split(".")[0] or here in sys.path:
            raise
        sys.path.insert(0, here)
        return importlib.import_module(module_name)
