"""A strict stand-in for CuPy, so that every ``gpu`` test also runs on a CPU.

minigen's GPU path can go wrong in ways NumPy never shows: a device array
that slips back to NumPy, a NumPy array mixed into device arithmetic, ``np.*``
called where ``xp.*`` was meant, a NumPy scalar where CuPy gives a 0-d array,
a random array drawn on the host and left there, a timer read without a
synchronisation. This module is a second device with CuPy's manners, built on
NumPy (each device array wraps a NumPy array and forwards to it):

* ``ndarray`` is not a ``numpy.ndarray``, and implicit conversion fails as in
  CuPy: ``np.asarray(x)`` raises TypeError. The doors are explicit:
  ``x.get()`` / ``asnumpy(x)`` to the host, ``asarray(host)`` to the device.
* A NumPy array mixed into device arithmetic, ``where``, assignment ... raises
  TypeError, as in CuPy. Python and NumPy *scalars* are fine, as in CuPy.
* Results are always device arrays, 0-d ones included (NumPy gives scalars).
* NumPy functions called on device arrays (``np.exp(x)``, ``np.concatenate``)
  raise, except ``np.shape``, ``np.ndim`` and ``np.size``. Real CuPy dispatches
  many of them to itself (NEP 13 and 18); the stand-in is stricter on purpose,
  as minigen's rule is ``xp = get_array_module(x)``.
* ``random.default_rng(seed)`` draws a stream of its own (Philox, as CuPy's
  XORWOW differs from NumPy's PCG64), with only the methods CuPy's Generator has.
* ``cuda.Device().synchronize()`` counts itself in ``cuda.synchronizations``.

Only what minigen uses is here; anything else raises "fake cupy: cupy.foo is
not implemented; add it to tests/fake_cupy.py". tests/conftest.py installs it
as ``cupy`` (and ``cupyx``) where no real GPU is. It cannot stand in for
speed, memory, real kernels or asynchrony: see the README's Tests section.
"""

from __future__ import annotations

import sys
import types

import numpy as np

_SCALARS = (bool, int, float, complex, np.generic)
_HOME = "tests/fake_cupy.py"


def _missing(what: str) -> AttributeError:
    return AttributeError(f"fake cupy: {what} is not implemented; add it to {_HOME}")


def _mixed(what: str) -> TypeError:
    return TypeError(
        f"fake cupy: {what} mixes a numpy.ndarray with a cupy array, which CuPy refuses too; "
        "move one of them explicitly (cupy.asarray(host_array) or device_array.get())"
    )


def _device(value, what: str):
    """An argument that is array *data*, ready for NumPy: a device array unwrapped, a
    scalar or None as it is. CuPy takes nothing else there: a NumPy array, a list or
    any other object is refused."""
    if isinstance(value, ndarray):
        return value._array
    if value is None or isinstance(value, _SCALARS):
        return value
    if isinstance(value, np.ndarray):
        raise _mixed(what)
    raise TypeError(f"fake cupy: {what} takes cupy arrays and scalars, not a {type(value).__name__} "
                    "(CuPy refuses it too); make a device array first with cupy.asarray(...)")


def _plain(value):
    """An argument that is not array data (a shape, axes, a dtype): only unwrapped."""
    return value._array if isinstance(value, ndarray) else value


def _wrap(result):
    """NumPy's result as device arrays; a NumPy scalar becomes a 0-d array, as in CuPy."""
    if isinstance(result, np.ndarray):
        return ndarray(result)
    if isinstance(result, np.generic):
        return ndarray(np.asarray(result))
    if type(result) in (list, tuple):
        return type(result)(_wrap(r) for r in result)
    return result


def _call(function, what: str, args: tuple, kwargs: dict, arrays, first: int = 0):
    """``function`` on the wrapped arrays. Positional arguments ``first`` up to
    ``first + arrays`` (all from ``first`` if None) and ``out``/``where`` are data;
    the rest (shapes, axes, a sequence of arrays handled by the caller) are not."""
    stop = len(args) if arrays is None else first + arrays
    args = [_device(a, what) if first <= i < stop else _plain(a) for i, a in enumerate(args)]
    out = kwargs.get("out")
    kwargs = {k: _device(v, what) if k in ("out", "where") else _plain(v) for k, v in kwargs.items()}
    result = function(*args, **kwargs)
    return out if isinstance(out, ndarray) else _wrap(result)  # out= gives back the caller's array


def _function(name: str, arrays=1, home=np):
    """cupy.<name>: NumPy's function of that name on the wrapped arrays; its first
    ``arrays`` positional arguments (all if None) are array data."""
    function = getattr(home, name)

    def call(*args, **kwargs):
        return _call(function, f"cupy.{name}", args, kwargs, arrays)

    call.__name__ = call.__qualname__ = name
    return call


def _joining(name: str):
    """cupy.<name>(arrays, ...) for concatenate and stack: a sequence of device arrays."""
    function = getattr(np, name)

    def call(arrays, *args, **kwargs):
        if not isinstance(arrays, (list, tuple)):
            raise TypeError(f"fake cupy: cupy.{name} takes a list or tuple of cupy arrays")
        unwrapped = [_device(a, f"cupy.{name}") for a in arrays]
        return _call(function, f"cupy.{name}", (unwrapped,) + args, kwargs, arrays=0)

    call.__name__ = call.__qualname__ = name
    return call


def _method(name: str, arrays=0):
    """ndarray.<name>: NumPy's method on the wrapped array; ``self`` back when NumPy returns it."""

    def method(self, *args, **kwargs):
        result = _call(getattr(self._array, name), f"ndarray.{name}", args, kwargs, arrays)
        return self if isinstance(result, ndarray) and result._array is self._array else result

    method.__name__ = method.__qualname__ = name
    return method


# ----------------------------------------------------------------------------
# The array


class ndarray:
    """A device array: a NumPy array inside, never handed out implicitly."""

    __slots__ = ("_array",)
    __hash__ = None

    def __init__(self, array):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"fake cupy: ndarray wraps a numpy.ndarray, got {type(array).__name__}; "
                            "use cupy.asarray(...) to make a device array")
        self._array = array

    # -- what an array is ------------------------------------------------------
    shape = property(lambda self: self._array.shape)
    dtype = property(lambda self: self._array.dtype)
    ndim = property(lambda self: self._array.ndim)
    size = property(lambda self: self._array.size)
    strides = property(lambda self: self._array.strides)
    itemsize = property(lambda self: self._array.itemsize)
    nbytes = property(lambda self: self._array.nbytes)
    T = property(lambda self: ndarray(self._array.T))

    def __getattr__(self, name):
        # Reached only for names the class does not define.
        if name.startswith("__"):  # protocol probes (copy, pickle, NumPy) must see a plain miss
            raise AttributeError(name)
        if name == "data":
            raise AttributeError(
                "fake cupy: ndarray.data is a device memory pointer in CuPy, not the values; "
                "a minigen Tensor's .data is the array, a raw array has none"
            )
        raise _missing(f"ndarray.{name}")

    # -- the explicit door to the host, and conversions CuPy allows ------------
    def get(self, stream=None, order="C", out=None, blocking=True):
        """A NumPy copy (CuPy copies from the device)."""
        return np.array(self._array, order=order, copy=True)

    def item(self):
        return self._array.item()

    def tolist(self):
        return self._array.tolist()

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """NumPy calls this for ``np.exp(x)`` and for ``numpy_thing + x``."""
        name = ufunc.__name__
        if name in _COMPARISONS:  # NumPy hands a scalar over as a 0-d array here; CuPy takes its item
            inputs = tuple(a.item() if isinstance(a, np.ndarray) and a.ndim == 0 else a for a in inputs)
        if any(isinstance(a, np.ndarray) for a in inputs + tuple(kwargs.get("out", ()))):
            raise _mixed(f"numpy.{name}")
        reflected = _REFLECTED.get(name)
        if method == "__call__" and reflected and len(inputs) == 2 and inputs[1] is self and not kwargs:
            return getattr(self, reflected)(inputs[0])  # a NumPy scalar on the left: np.float32(2) * x
        raise TypeError(f"fake cupy: numpy.{name} was called on a cupy array; "
                        f"call xp.{name} with xp = get_array_module(x) instead")

    def __array_function__(self, func, types, args, kwargs):
        if func in (np.shape, np.ndim, np.size) and len(args) == 1 and not kwargs:
            return func(self._array)  # metadata, no values: CuPy answers these too
        raise TypeError(f"fake cupy: numpy.{func.__name__} was called on a cupy array; "
                        f"call xp.{func.__name__} with xp = get_array_module(x) instead")

    def __bool__(self):
        if self._array.size != 1:
            raise ValueError("The truth value of an array with more than one element is ambiguous. "
                             "Use a.any() or a.all()")
        return bool(self._array.item())

    def __int__(self):
        return int(self._array.item())

    def __float__(self):
        return float(self._array.item())

    def __complex__(self):
        return complex(self._array.item())

    # No __index__: CuPy has none, so a 0-d device array is not a Python index.

    def __repr__(self):
        return repr(self._array)

    def __str__(self):
        return str(self._array)

    def __format__(self, spec):
        return format(self._array, spec)

    # -- containers and indexing ----------------------------------------------
    def __len__(self):
        if self._array.ndim == 0:
            raise TypeError("len() of unsized object")
        return len(self._array)

    def __iter__(self):
        if self._array.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._array)))

    def __getitem__(self, index):
        # Host index arrays are allowed: CuPy copies them to the device.
        return _wrap(self._array[_index(index)])

    def __setitem__(self, index, value):
        if not isinstance(value, (ndarray,) + _SCALARS):
            if isinstance(value, np.ndarray):
                raise _mixed("assigning x[...] = value")
            raise TypeError(f"fake cupy: cannot assign a {type(value).__name__} into a cupy array")
        self._array[_index(index)] = _plain(value)

    # -- methods ----------------------------------------------------------------
    reshape, transpose, swapaxes, squeeze = (_method(n) for n in ("reshape", "transpose", "swapaxes", "squeeze"))
    ravel, flatten, astype, copy, view = (_method(n) for n in ("ravel", "flatten", "astype", "copy", "view"))
    sum, mean, var, std, prod = (_method(n) for n in ("sum", "mean", "var", "std", "prod"))
    max, min, argmax, argmin, any, all = (_method(n) for n in ("max", "min", "argmax", "argmin", "any", "all"))
    cumsum, repeat = _method("cumsum"), _method("repeat")
    clip, dot = _method("clip", arrays=2), _method("dot", arrays=1)

    def fill(self, value):
        if not isinstance(value, _SCALARS):
            raise TypeError(f"fake cupy: fill takes a scalar, got {type(value).__name__}")
        self._array.fill(value)


def _index(index):
    """An index for NumPy: device arrays unwrapped, host ones kept (CuPy copies those over)."""
    if type(index) is tuple:
        return tuple(_plain(i) for i in index)
    return _plain(index)


def _binary(name: str):
    def op(self, other):
        if isinstance(other, ndarray):
            other = other._array
        elif isinstance(other, np.ndarray):
            raise _mixed(f"the operator {name}")
        elif not isinstance(other, _SCALARS):
            return NotImplemented  # let the other side try (a minigen Tensor's reflected operator)
        result = getattr(self._array, name)(other)
        if result is NotImplemented:
            return result
        return self if result is self._array else _wrap(result)  # in place: x += y is x

    op.__name__ = op.__qualname__ = name
    return op


def _unary(name: str):
    def op(self):
        return _wrap(getattr(self._array, name)())

    op.__name__ = name
    return op


_OPERATORS = [f"__{kind}{op}__" for op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow",
                                           "matmul", "and", "or", "xor") for kind in ("", "r", "i")]
for _name in _OPERATORS + ["__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"]:
    setattr(ndarray, _name, _binary(_name))
for _name in ("__neg__", "__pos__", "__abs__", "__invert__"):
    setattr(ndarray, _name, _unary(_name))

# numpy_scalar <op> x arrives as ufunc(numpy_scalar, x): x's reflected operator answers.
_REFLECTED = {
    "add": "__radd__", "subtract": "__rsub__", "multiply": "__rmul__", "divide": "__rtruediv__",
    "floor_divide": "__rfloordiv__", "remainder": "__rmod__", "power": "__rpow__", "matmul": "__rmatmul__",
    "bitwise_and": "__rand__", "bitwise_or": "__ror__", "bitwise_xor": "__rxor__",
    "less": "__gt__", "less_equal": "__ge__", "greater": "__lt__", "greater_equal": "__le__",
    "equal": "__eq__", "not_equal": "__ne__",
}
_COMPARISONS = ("less", "less_equal", "greater", "greater_equal", "equal", "not_equal")


# ----------------------------------------------------------------------------
# The module's functions


def asarray(a, dtype=None, order=None, *, blocking=False):
    """A device array: ``a`` itself if it already is one of that dtype, else a copy
    (host data included: this is the explicit host-to-device door)."""
    if isinstance(a, ndarray):
        result = np.asarray(a._array, dtype=dtype, order=order)
        return a if result is a._array else ndarray(result)
    return ndarray(np.array(a, dtype=dtype, order=order or "K", copy=True))


def array(obj, dtype=None, copy=True, order="K", ndmin=0, *, blocking=False):
    """A device array holding ``obj`` (a copy unless ``copy`` is False and nothing changes)."""
    if isinstance(obj, ndarray):
        result = np.array(obj._array, dtype=dtype, copy=True if copy else None, order=order, ndmin=ndmin)
        return obj if result is obj._array else ndarray(result)
    return ndarray(np.array(obj, dtype=dtype, copy=True, order=order, ndmin=ndmin))


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    """The host copy of a device array (a host array is returned as it is, as in CuPy)."""
    return a.get(order=order) if isinstance(a, ndarray) else np.asarray(a, order=order)


for _name in ("exp", "log", "log1p", "expm1", "sqrt", "tanh", "sin", "cos", "abs", "sign", "rint",
              "isfinite", "isnan", "cumsum", "argmax", "expand_dims", "broadcast_to", "split", "squeeze",
              "transpose", "reshape", "zeros_like", "ones_like", "empty_like", "full_like", "tril",
              "ascontiguousarray"):
    globals()[_name] = _function(_name)
for _name in ("maximum", "minimum", "matmul", "tensordot", "take_along_axis", "copyto"):
    globals()[_name] = _function(_name, arrays=2)
for _name in ("where", "clip"):
    globals()[_name] = _function(_name, arrays=3)
for _name in ("zeros", "ones", "full", "empty", "arange"):
    globals()[_name] = _function(_name, arrays=0)  # shapes and fill values are not arrays
concatenate, stack = _joining("concatenate"), _joining("stack")
del _name


def einsum(subscripts, *operands, **kwargs):
    return _call(np.einsum, "cupy.einsum", (subscripts,) + operands, kwargs, arrays=None, first=1)

inf, nan, pi, newaxis = np.inf, np.nan, np.pi, np.newaxis
dtype = np.dtype
bool_, float16, float32, float64 = np.bool_, np.float16, np.float32, np.float64
int8, int16, int32, int64, uint8 = np.int8, np.int16, np.int32, np.int64, np.uint8


class _Namespace:
    """A sub-module (cupy.random, cupy.linalg ...) with only the members given."""

    def __init__(self, path: str, **members):
        self._path = path
        self.__dict__.update(members)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise _missing(f"{self._path}.{name}")


linalg = _Namespace("cupy.linalg", norm=_function("norm", home=np.linalg))
lib = _Namespace("cupy.lib", stride_tricks=_Namespace(
    "cupy.lib.stride_tricks", as_strided=_function("as_strided", home=np.lib.stride_tricks)))


# ----------------------------------------------------------------------------
# Random numbers


class Generator:
    """The methods of ``cupy.random.Generator`` that minigen uses, on a stream of its own.

    Philox, not NumPy's PCG64: as on a real GPU, the same seed gives other
    numbers than on the CPU. Results are device arrays, 0-d ones included.
    """

    def __init__(self, seed=None):
        self._rng = np.random.Generator(np.random.Philox(seed))

    def random(self, size=None, dtype=np.float64):
        return ndarray(np.asarray(self._rng.random(size, dtype=dtype)))

    def standard_normal(self, size=None, dtype=np.float64):
        return ndarray(np.asarray(self._rng.standard_normal(size, dtype=dtype)))

    def uniform(self, low=0.0, high=1.0, size=None, dtype=np.float64):
        return ndarray(np.asarray(self._rng.uniform(low, high, size)).astype(dtype, copy=False))

    def integers(self, low, high=None, size=None, dtype=np.int64, endpoint=False):
        return ndarray(np.asarray(self._rng.integers(low, high, size, dtype=dtype, endpoint=endpoint)))

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"fake cupy: Generator.{name} is not implemented; check that cupy.random.Generator has it "
            f"(it has no normal, choice, permutation or shuffle), then add it to {_HOME}"
        )


random = _Namespace("cupy.random", default_rng=Generator, Generator=Generator)


# ----------------------------------------------------------------------------
# The device: one GPU, whose synchronisations are counted


class _Device:
    def __init__(self, device=0):
        self.id = device

    def synchronize(self):
        """Count the call (a test can assert that timing code synchronises)."""
        cuda.synchronizations += 1


cuda = _Namespace("cupy.cuda", Device=_Device, synchronizations=0,
                  runtime=_Namespace("cupy.cuda.runtime", getDeviceCount=lambda: 1))


def scatter_add(a, slices, value):
    """``a[slices] += value`` with repeated indices summed (cupyx.scatter_add)."""
    np.add.at(_device(a, "cupyx.scatter_add"), _index(slices), _device(value, "cupyx.scatter_add"))


cupyx = types.ModuleType("cupyx", "The part of cupyx that minigen uses (the stand-in's).")
cupyx.scatter_add = scatter_add


def __getattr__(name):  # anything else asked of the module
    if name.startswith("__"):
        raise AttributeError(name)
    raise _missing(f"cupy.{name}")


def _cupyx_getattr(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise _missing(f"cupyx.{name}")


cupyx.__getattr__ = _cupyx_getattr


# ----------------------------------------------------------------------------
# Installing it as ``cupy``

_replaced: dict = {}


def install() -> None:
    """Make ``import cupy`` and ``import cupyx`` give the stand-in (the engine imports CuPy lazily)."""
    for name, module in (("cupy", sys.modules[__name__]), ("cupyx", cupyx)):
        _replaced.setdefault(name, sys.modules.get(name))
        sys.modules[name] = module


def uninstall() -> None:
    """Put back whatever ``cupy`` and ``cupyx`` were before :func:`install`."""
    for name, module in _replaced.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module
    _replaced.clear()
