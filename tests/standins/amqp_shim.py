"""Test-only shim: pad AMQP performatives before the SDK's pyamqp decoder reads them.

Why this exists
---------------
AMQP 1.0 lets a peer omit trailing null fields of a performative, and
qpid-proton (which the Event Hubs stand-in is built on) does so.  The pure
Python ``pyamqp`` stack inside ``azure-eventhub`` indexes performative fields
by position (``frame[9]`` of OPEN, ``frame[7]`` of BEGIN, ...), so a trimmed
frame raises ``IndexError`` ("list index out of range") deep inside the SDK.
The stand-in fills what proton lets it fill (connection and link properties),
but proton cannot send BEGIN properties, so the client side must pad.

The real Event Hubs service always sends the full field lists, so production
code never needs (and never loads) this shim.  Tests load it:

* in-process via :func:`install` (the ``eventhub_standin`` fixture does it);
* in subprocesses by putting ``tests/standins/sitecustomize_dir`` on
  ``PYTHONPATH`` (see :func:`subprocess_env`); that ``sitecustomize.py`` loads
  this very file by path, so there is a single implementation.

The patch is applied lazily: if pyamqp's transport modules are not imported
yet, an import hook patches them right after they load, so a process that
never touches Event Hubs pays nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

# Full field counts per performative descriptor code (AMQP 1.0, part 2.7 and 5.3).
FIELD_COUNTS: Dict[int, int] = {
    0x10: 10,  # OPEN
    0x11: 8,  # BEGIN
    0x12: 14,  # ATTACH
    0x13: 11,  # FLOW
    0x14: 11,  # TRANSFER (pyamqp appends the payload as element 11)
    0x15: 6,  # DISPOSITION
    0x16: 3,  # DETACH
    0x17: 1,  # END
    0x18: 1,  # CLOSE
    0x40: 1,  # SASL-MECHANISMS
    0x41: 2,  # SASL-INIT
    0x42: 1,  # SASL-CHALLENGE
    0x43: 1,  # SASL-RESPONSE
    0x44: 2,  # SASL-OUTCOME
}

_TRANSFER = 0x14
_LIST0 = 0x45

# Modules that did ``from .._decode import decode_frame`` and so hold their
# own reference to the function: each one must be patched separately.
TRANSPORT_MODULES = (
    "azure.eventhub._pyamqp._transport",
    "azure.eventhub._pyamqp.aio._transport_async",
)

_MARK = "_aoai_standin_padded"


def _pad(fields: List[Any], frame_type: int) -> List[Any]:
    want = FIELD_COUNTS.get(frame_type)
    if want is None:
        return fields
    if frame_type == _TRANSFER:
        # The payload rides as the last element; the padding goes before it.
        payload = fields.pop()
        if len(fields) < want:
            fields.extend([None] * (want - len(fields)))
        fields.append(payload)
    elif len(fields) < want:
        fields.extend([None] * (want - len(fields)))
    return fields


def wrap_decode_frame(original: Callable[[memoryview], Tuple[int, List[Any]]]):
    """Return a ``decode_frame`` that pads the performative's field list."""
    if getattr(original, _MARK, False):
        return original

    def decode_frame(data: memoryview) -> Tuple[int, List[Any]]:
        # pyamqp only knows list8/list32 bodies; a performative with *no*
        # fields at all (proton sends e.g. a bare CLOSE as list0) would make
        # it read past the buffer.
        if len(data) >= 4 and data[3] == _LIST0:
            frame_type = data[2]
            fields: List[Any] = []
            if frame_type == _TRANSFER:
                fields.append(data[4:])
        else:
            frame_type, fields = original(data)
        return frame_type, _pad(fields, frame_type)

    setattr(decode_frame, _MARK, True)
    decode_frame.__wrapped__ = original  # type: ignore[attr-defined]
    return decode_frame


def _patch_module(module: Any) -> None:
    current = getattr(module, "decode_frame", None)
    if current is not None and not getattr(current, _MARK, False):
        module.decode_frame = wrap_decode_frame(current)


class _PatchingLoader(importlib.abc.Loader):
    """Delegates loading, then patches the freshly executed module."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec):  # noqa: D401 - loader protocol
        return self._inner.create_module(spec)

    def exec_module(self, module) -> None:
        self._inner.exec_module(module)
        _patch_module(module)


class _PatchingFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in TRANSPORT_MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _PatchingLoader(spec.loader)
        return spec


_installed = False


def install() -> None:
    """Pad pyamqp frames in this process (idempotent, safe before or after import)."""
    global _installed
    for name in TRANSPORT_MODULES:
        module = sys.modules.get(name)
        if module is not None:
            _patch_module(module)
    if not _installed:
        sys.meta_path.insert(0, _PatchingFinder())
        _installed = True


def is_installed() -> bool:
    """True when every already-imported transport module decodes padded frames."""
    for name in TRANSPORT_MODULES:
        module = sys.modules.get(name)
        if module is not None and not getattr(module.decode_frame, _MARK, False):
            return False
    return _installed


SITECUSTOMIZE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sitecustomize_dir")


def subprocess_env(env: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Copy of ``env`` (default: os.environ) whose PYTHONPATH loads the shim at start-up."""
    result = dict(os.environ if env is None else env)
    parts = [SITECUSTOMIZE_DIR]
    if result.get("PYTHONPATH"):
        parts.append(result["PYTHONPATH"])
    result["PYTHONPATH"] = os.pathsep.join(parts)
    return result
