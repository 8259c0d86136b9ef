"""Test-only start-up hook: load the pyamqp padding shim in a subprocess.

A test puts this directory on PYTHONPATH for a child process (for example
``aoai-monitor run``) that talks to the Event Hubs stand-in; Python imports
``sitecustomize`` at start-up.  The shim is loaded by file path so that the
child does not need the repository's ``tests`` package on its import path.
Never used in production.
"""

import importlib.util
import os
import sys


def _load_shim() -> None:
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "amqp_shim.py")
    spec = importlib.util.spec_from_file_location("_aoai_standin_amqp_shim", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.install()


try:
    _load_shim()
except Exception as exc:  # never break interpreter start-up over a test helper
    sys.stderr.write(f"standin sitecustomize: shim not installed: {exc!r}\n")
