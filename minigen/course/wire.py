"""The wire between the grader and the graded code: calls and values over two pipes.

``minigen grade`` runs the graded checks in a process that never imports a
student's file; the student's functions run in a sandbox process
(:mod:`minigen.course.sandbox`). The two talk through a :class:`Channel` only:
a call names a function and carries its arguments, the answer carries the
return value or the error. Values cross as data, never as pickles: JSON for
the structure and raw bytes for numeric arrays (dtype checked, so no object
arrays), so nothing the sandbox sends can run code in the grader.

* Numbers, strings, None, lists, tuples, dicts, slices, NumPy arrays, scalars
  and dtypes are copied.
* Instances of minigen's own classes (Tensor, the Function subclasses,
  Schedule, Timing) cross as their class, named and looked up among minigen's
  already loaded modules (never imported, never a class of the student's
  file), and their attributes, copied.
* Anything else callable (a check's lambda, a fake device's method, the
  reference of another task) crosses as a handle: calling it calls back
  across the wire, so a callback runs where it was defined.

Within one top-level call an object sent twice arrives as one object, an
object sent back arrives as the sender's original (``backward_order`` returns
the grader's own Functions), and an array the receiver changed in place is
copied back into the sender's array with the receiver's next message (so a
check sees a student's in-place write, and an ``evaluate()`` callback sees
the value being nudged). Tables are cleared when the top-level call ends.
"""

from __future__ import annotations

import builtins
import itertools
import json
import os
import sys
import traceback

import numpy as np

MAX_MESSAGE = 1 << 31  # bytes; a larger message is refused, not read
NUMERIC_KINDS = "biufc"  # bool, int, uint, float, complex: arrays of anything else do not cross
SAFE_MODULES = ("numpy", "math")  # modules that may cross as a value (an op that stored np as xp)
_PRIMITIVES = (type(None), bool, int, float, str)


class WireError(Exception):
    """The other side sent something this protocol does not allow, or broke off."""


class PeerGone(WireError):
    """The other side's end of the pipe closed (its process ended)."""


# ----------------------------------------------------------------------------
# Framing: two lengths, a JSON header, a blob of array bytes


def _read_exactly(fd: int, size: int) -> bytearray:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        chunk = os.read(fd, min(size - got, 1 << 20))
        if not chunk:
            raise PeerGone("the other process closed the pipe")
        view[got:got + len(chunk)] = chunk
        got += len(chunk)
    return buffer


def _write_all(fd: int, chunks) -> None:
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        while view:
            view = view[os.write(fd, view):]


def write_frame(fd: int, header: dict, blobs: list) -> None:
    text = json.dumps(header, separators=(",", ":")).encode()
    size = sum(len(blob) for blob in blobs)
    _write_all(fd, [len(text).to_bytes(8, "little"), size.to_bytes(8, "little"), text, *blobs])


def read_frame(fd: int) -> tuple:
    """(header, blob) of the next message; WireError for one too large or not JSON."""
    lengths = _read_exactly(fd, 16)
    header_size, blob_size = int.from_bytes(lengths[:8], "little"), int.from_bytes(lengths[8:], "little")
    if header_size + blob_size > MAX_MESSAGE:
        raise WireError(f"a message of {header_size + blob_size} bytes is over the limit of {MAX_MESSAGE}")
    try:
        header = json.loads(_read_exactly(fd, header_size))
    except (ValueError, RecursionError) as error:
        raise WireError(f"a message that is not JSON: {error}") from None
    if not isinstance(header, dict) or not isinstance(header.get("kind"), str):
        raise WireError("a message without a kind")
    return header, _read_exactly(fd, blob_size)


# ----------------------------------------------------------------------------
# Classes that may cross: minigen's own, already loaded


def class_path(cls) -> str | None:
    """"module:qualname" of a minigen class that the other side can find by name, else None."""
    module = getattr(cls, "__module__", "")
    if not isinstance(module, str) or not (module == "minigen" or module.startswith("minigen.")) \
            or module.startswith("minigen.course"):
        return None
    path = f"{module}:{cls.__qualname__}"
    return path if _find_class(path) is cls else None


def _find_class(path: str):
    """The minigen class named ``path``, from the loaded modules only (a name never imports code)."""
    module_name, _, qualname = path.partition(":")
    module = sys.modules.get(module_name)
    if module is None or not (module_name == "minigen" or module_name.startswith("minigen.")) \
            or module_name.startswith("minigen.course") or "<" in qualname:
        return None
    found = module
    for part in qualname.split("."):
        found = vars(found).get(part) if hasattr(found, "__dict__") else None
    return found if isinstance(found, type) and found.__module__ == module_name else None


def _state(value) -> dict:
    """The attributes that make up a minigen object: its __dict__ and any slots."""
    state = dict(vars(value)) if hasattr(value, "__dict__") else {}
    for cls in type(value).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if name not in ("__dict__", "__weakref__") and hasattr(value, name):
                state[name] = getattr(value, name)
    return state


def _set_state(value, state: dict) -> None:
    """Give ``value`` its attributes; no __init__, __setattr__, property or __setstate__ of its class runs."""
    for name, item in state.items():
        if not isinstance(name, str) or name.startswith("__"):
            raise WireError(f"an attribute {name!r:.40} of a {type(value).__name__} may not cross")
        if hasattr(value, "__dict__"):
            value.__dict__[name] = item
        else:
            object.__setattr__(value, name, item)


def _numeric_dtype(text) -> np.dtype:
    dtype = np.dtype(str(text))
    if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise WireError(f"arrays of dtype {dtype} do not cross (numbers only)")
    return dtype


# ----------------------------------------------------------------------------
# Errors that cross


def error_fields(error: BaseException, where=None) -> dict:
    """What an error reply says: the error's type, its message and where it was raised."""
    try:
        message = str(error)[:2000]
    except Exception:
        message = "(its message could not be shown)"
    place = where(error) if where else None
    return {"type": type(error).__name__, "message": message + (f" [{place}]" if place else "")}


def remote_error(header: dict) -> Exception:
    """The exception to raise for an error reply: the built-in type of the same name where there
    is one (a NotImplementedError stays one), else a RuntimeError naming the type."""
    name, message = str(header.get("type", "Error")), str(header.get("message", ""))
    kind = getattr(builtins, name, None)
    error = None
    if isinstance(kind, type) and issubclass(kind, Exception) and kind not in (StopIteration, StopAsyncIteration):
        try:
            error = kind(message)
        except Exception:
            error = None
    if error is None:
        error = RuntimeError(f"{name}: {message}")
    error.raised_across_the_wire = True
    return error


def is_remote(error: BaseException) -> bool:
    """Whether ``error`` is the other side's clean error reply (the channel is still in step)."""
    return getattr(error, "raised_across_the_wire", False) is True


# ----------------------------------------------------------------------------
# The channel


class RemoteCallable:
    """A function of the other process: calling it sends the call across and waits for the answer."""

    def __init__(self, channel, handle: int, name: str):
        self._channel, self._handle, self._name = channel, handle, name

    def __call__(self, *args, **kwargs):
        return self._channel.call({"y": self._handle}, args, kwargs)

    def __repr__(self) -> str:
        return f"<{self._name}, run by the other process>"


class Channel:
    """One end of the wire: sends calls and answers, and serves the other side's calls.

    ``serve_task(name, helpers)`` (the sandbox's end only) returns the function a top-level
    call names; ``catch`` is what a served call's failure may be to become an error reply
    (the sandbox catches everything a student's code raises; the grader only Exceptions, so
    a time limit still stops it); ``where(error)`` says where an error was raised.
    """

    def __init__(self, read_fd: int, write_fd: int, serve_task=None, catch=Exception, where=None):
        self.read_fd, self.write_fd = read_fd, write_fd
        self.serve_task, self.catch, self.where = serve_task, catch, where
        self._handles = itertools.count(1)
        self.depth = 0  # calls in progress on this side's stack, in either direction
        self._reset()

    def _reset(self) -> None:
        self.mine = {}  # handle -> this side's object that the other side may refer to
        self.my_handles = {}  # id(object) -> its handle
        self.theirs = {}  # the other side's handle -> this side's copy
        self.their_handles = {}  # id(copy) -> the other side's handle
        self.copies = []  # [their handle, this side's copy of their array, its bytes when last in step]

    # -- calls -----------------------------------------------------------------
    def call(self, target: dict, args=(), kwargs=None, **values):
        """Call the other side's function ``target`` and wait for its answer, serving its calls back."""
        self.depth += 1
        try:
            self.send("call", {"target": target}, args=tuple(args), kwargs=dict(kwargs or {}), **values)
            return self._answer()
        finally:
            self.depth -= 1
            if self.depth == 0:
                self._reset()

    def _answer(self):
        while True:
            header, resolve = self.receive()
            if header["kind"] == "return":
                return resolve(header.get("value"))
            if header["kind"] == "error":
                raise remote_error(header)
            if header["kind"] != "call":
                raise WireError(f"a {header['kind']!r} message in the middle of a call")
            self.serve(header, resolve)

    def serve(self, header: dict, resolve) -> None:
        """Run the call in ``header`` and send its answer (an error reply if it raised)."""
        self.depth += 1
        try:
            try:
                function = self._target(header, resolve)
                result = function(*resolve(header.get("args")), **resolve(header.get("kwargs")))
            except WireError:
                raise
            except self.catch as error:
                self.send("error", error_fields(error, self.where))
                return
            try:
                self.send("return", value=result)
            except (TypeError, ValueError) as error:  # a value that cannot cross: say so instead
                self.send("error", error_fields(error))
        finally:
            self.depth -= 1
            if self.depth == 0:
                self._reset()

    def _target(self, header: dict, resolve):
        target = header.get("target")
        if isinstance(target, dict) and "task" in target and self.serve_task is not None:
            return self.serve_task(str(target["task"]), resolve(header.get("helpers")) or {})
        function = resolve(target)
        if not callable(function) or type(function) in _PRIMITIVES:
            raise WireError("a call of something that is not a function")
        return function

    def serve_forever(self) -> None:
        """Serve top-level calls until the other side closes the pipe (the sandbox's main loop)."""
        while True:
            try:
                header, resolve = self.receive()
            except PeerGone:
                return
            if header["kind"] == "close":
                return
            if header["kind"] != "call":
                raise WireError(f"a {header['kind']!r} message where a call was expected")
            self.serve(header, resolve)

    # -- sending ---------------------------------------------------------------
    def send(self, kind: str, fields=None, **values) -> None:
        """Send a message: plain JSON ``fields``, ``values`` encoded, and the arrays changed in place."""
        out = _Outgoing(self)
        header = {"kind": kind, **(fields or {})}
        for name, value in values.items():
            header[name] = out.ref(value)
        out.finish()
        header.update(nodes=out.nodes, arrays=out.arrays, updates=self._updates(out))
        write_frame(self.write_fd, header, out.blobs)

    def _updates(self, out) -> list:
        """[their handle, array index] for each of their arrays this side changed since last in step."""
        updates = []
        for entry in self.copies:
            handle, copy, before = entry
            now = (copy.dtype.str, copy.shape, copy.tobytes())
            if now != before:
                updates.append([handle, out.add_array(copy)])
                entry[2] = now
        return updates

    # -- receiving -------------------------------------------------------------
    def receive(self) -> tuple:
        """The next message (header, resolve), its objects registered and its in-place changes applied."""
        header, blob = read_frame(self.read_fd)
        try:
            arrays = [_array(meta, blob) for meta in header.get("arrays", [])]
            _Incoming(self, header.get("nodes", {}), arrays).register()
            self._apply_updates(header.get("updates", []), arrays)
        except WireError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RecursionError) as error:
            raise WireError(f"a malformed message: {type(error).__name__}: {error}") from None
        return header, self._resolve

    def _resolve(self, ref):
        if type(ref) in _PRIMITIVES:
            return ref
        if not isinstance(ref, dict):
            raise WireError(f"a malformed reference {ref!r:.80}")
        if "y" in ref:  # one of this side's own objects, sent back
            if ref["y"] not in self.mine:
                raise WireError(f"a reference to an unknown object {ref['y']!r:.40}")
            return self.mine[ref["y"]]
        if ref.get("h") not in self.theirs:
            raise WireError(f"a reference to an object that was never sent {ref.get('h')!r:.40}")
        return self.theirs[ref["h"]]

    def _apply_updates(self, updates, arrays) -> None:
        for handle, index in updates:
            target, new = self.mine.get(handle), arrays[index]
            if not isinstance(target, np.ndarray):
                raise WireError("an in-place change of something that is not an array sent by this side")
            if target.shape != new.shape or target.dtype != new.dtype:
                raise ValueError(f"an input array of {target.dtype} {target.shape} was changed in place into "
                                 f"{new.dtype} {new.shape}; a graded function must leave its inputs as they were")
            np.copyto(target, new)


def _array(meta: dict, blob: bytearray) -> np.ndarray:
    dtype = _numeric_dtype(meta["dtype"])
    shape = tuple(int(n) for n in meta["shape"])
    offset, size = int(meta["offset"]), int(meta["nbytes"])
    if any(n < 0 for n in shape) or offset < 0 or offset + size > len(blob) \
            or size != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        raise WireError(f"an array of {dtype} {shape} that does not fit its bytes")
    return np.frombuffer(blob, dtype=dtype, count=size // dtype.itemsize if dtype.itemsize else 0,
                         offset=offset).reshape(shape).copy()


class _Outgoing:
    """The nodes, array table and array bytes of one message being written."""

    def __init__(self, channel: Channel):
        self.channel, self.nodes, self.arrays, self.blobs = channel, {}, [], []
        self.size, self.pending = 0, []

    def ref(self, value):
        """A reference to ``value``; a new object is given a handle and encoded in finish()."""
        if type(value) in _PRIMITIVES:
            return value
        key, channel = id(value), self.channel
        if key in channel.their_handles:
            return {"y": channel.their_handles[key]}
        if key not in channel.my_handles:
            handle = next(channel._handles)
            channel.mine[handle], channel.my_handles[key] = value, handle
            self.pending.append((handle, value))
        return {"h": channel.my_handles[key]}

    def finish(self) -> None:
        while self.pending:  # a loop, not recursion: a graph 3000 functions deep crosses too
            handle, value = self.pending.pop()
            self.nodes[str(handle)] = self._node(value)

    def add_array(self, array: np.ndarray) -> int:
        array = np.asarray(array, order="C")  # not ascontiguousarray: it makes 0-d arrays 1-d
        _numeric_dtype(array.dtype.str)
        data = array.tobytes()
        self.arrays.append({"dtype": array.dtype.str, "shape": list(array.shape), "offset": self.size,
                            "nbytes": len(data)})
        self.blobs.append(data)
        self.size += len(data)
        return len(self.arrays) - 1

    def _node(self, value) -> dict:
        ref = self.ref
        if isinstance(value, np.ndarray):
            return {"t": "array", "a": self.add_array(value)}
        if isinstance(value, np.generic):
            return {"t": "scalar", "a": self.add_array(np.asarray(value))}
        if isinstance(value, np.dtype):
            return {"t": "dtype", "dtype": _numeric_dtype(value.str).str}
        if isinstance(value, type) and issubclass(value, np.generic):
            return {"t": "scalar_type", "dtype": _numeric_dtype(np.dtype(value).str).str}
        if type(value) in (list, tuple):
            return {"t": type(value).__name__, "items": [ref(item) for item in value]}
        if type(value) is dict:
            return {"t": "dict", "items": [[ref(key), ref(item)] for key, item in value.items()]}
        if type(value) is slice:
            return {"t": "slice", "items": [ref(value.start), ref(value.stop), ref(value.step)]}
        if value is Ellipsis:
            return {"t": "ellipsis"}
        if type(value).__name__ == "module" and value.__name__ in SAFE_MODULES:
            return {"t": "module", "name": value.__name__}
        path = class_path(type(value))
        if path is not None:
            return {"t": "object", "class": path, "state": {k: ref(v) for k, v in _state(value).items()}}
        if callable(value):
            return {"t": "callable", "name": str(getattr(value, "__qualname__", type(value).__name__))[:100]}
        cls = type(value)
        raise TypeError(f"a {cls.__module__}.{cls.__qualname__} cannot cross between the grader and the graded "
                        "code: use numbers, arrays, lists, tuples, dicts, Tensors and minigen's own objects")


class _Incoming:
    """Registers the objects of one received message: shells first, then contents (cycles allowed)."""

    def __init__(self, channel: Channel, nodes: dict, arrays: list):
        self.channel, self.nodes, self.arrays = channel, nodes, arrays
        self.building = set()

    def register(self) -> None:
        channel, later = self.channel, []
        for key, node in self.nodes.items():
            handle = int(key)
            if handle in channel.theirs:
                raise WireError(f"the object {handle} was sent twice")
            shell = self._shell(handle, node)
            if shell is not _LATER:
                self._keep(handle, shell)
            later.append((handle, node))
        for handle, node in later:
            if node["t"] in ("tuple", "slice"):
                self._immutable(handle)
        for handle, node in later:
            self._fill(channel.theirs[handle], node)

    def _keep(self, handle: int, value) -> None:
        self.channel.theirs[handle] = value
        self.channel.their_handles[id(value)] = handle
        if isinstance(value, np.ndarray):
            self.channel.copies.append([handle, value, (value.dtype.str, value.shape, value.tobytes())])

    def _shell(self, handle: int, node: dict):
        kind = node["t"]
        if kind in ("array", "scalar"):
            array = self.arrays[node["a"]]
            return array if kind == "array" else array[()]
        if kind == "dtype":
            return _numeric_dtype(node["dtype"])
        if kind == "scalar_type":
            return _numeric_dtype(node["dtype"]).type
        if kind == "ellipsis":
            return Ellipsis
        if kind == "module":
            if node["name"] not in SAFE_MODULES or node["name"] not in sys.modules:
                raise WireError(f"the module {node['name']!r:.40} may not cross")
            return sys.modules[node["name"]]
        if kind == "list":
            return []
        if kind == "dict":
            return {}
        if kind == "object":
            cls = _find_class(str(node["class"]))
            if cls is None:
                raise WireError(f"a {str(node['class'])[:80]} cannot cross: only minigen's own classes can")
            return object.__new__(cls)
        if kind == "callable":
            return RemoteCallable(self.channel, handle, str(node.get("name", "function"))[:100])
        if kind in ("tuple", "slice"):
            return _LATER
        raise WireError(f"an object of unknown kind {kind!r:.40}")

    def _immutable(self, handle: int):
        """Build a tuple or slice once its items exist (a tuple in a tuple first)."""
        channel = self.channel
        if handle in channel.theirs:
            return channel.theirs[handle]
        if handle in self.building:
            raise WireError("a tuple that contains itself")
        self.building.add(handle)
        node = self.nodes[str(handle)]
        items = [self._item(ref) for ref in node["items"]]
        value = tuple(items) if node["t"] == "tuple" else slice(*items[:3])
        self._keep(handle, value)
        return value

    def _item(self, ref):
        if isinstance(ref, dict) and "h" in ref and str(ref["h"]) in self.nodes \
                and self.nodes[str(ref["h"])]["t"] in ("tuple", "slice"):
            return self._immutable(int(ref["h"]))
        return self.channel._resolve(ref)

    def _fill(self, value, node: dict) -> None:
        kind, resolve = node["t"], self.channel._resolve
        if kind == "list":
            value.extend(resolve(ref) for ref in node["items"])
        elif kind == "dict":
            value.update((resolve(key), resolve(item)) for key, item in node["items"])
        elif kind == "object":
            _set_state(value, {name: resolve(ref) for name, ref in node["state"].items()})


_LATER = object()  # a tuple or slice: built after the objects it may contain


def last_frame_in(path: str):
    """``where`` for a Channel: "file.py:line" of the last frame of ``path`` in an error's traceback."""
    def where(error: BaseException):
        lines = [line for frame, line in traceback.walk_tb(error.__traceback__) if frame.f_code.co_filename == path]
        return f"{os.path.basename(path)}:{lines[-1]}" if lines else None
    return where
