"""Read official EG3D network pickles without running any code stored in them.

EG3D's training loop writes `pickle.dump(dict(G=..., D=..., G_ema=..., augment_pipe=...,
training_set_kwargs=...), f)`. Its networks are `torch_utils.persistence` classes, which pickle as
a call to `torch_utils.persistence._reconstruct_persistent_obj(meta)` where `meta` carries the
*source code* of the defining module (`module_src`), the class name and the module's `__dict__`
(`state`). A normal unpickle `exec`s that source. This module never does: a restricted
unpickler resolves globals only from an explicit allow-list (tensor and storage rebuilders, a few
container and numpy constructors, inert stand-ins for module classes) and refuses every other
global by name before anything is called. Each network becomes an `InertObject` (class name +
state, `module_src` kept as plain text), from which `extract_generator` reads the constructor
arguments and the weights and `load_eg3d_pickle` builds our own `TriPlaneGenerator`.
"""
from __future__ import annotations

import collections
import io
import pickle
import warnings
from pathlib import Path

import numpy as np
import torch

from core.checkpoint.errors import (
    CheckpointError,
    CorruptCheckpointError,
    ForbiddenGlobalError,
    NotANetworkPickleError,
    TruncatedCheckpointError,
    naming_file,
)
from core.checkpoint.generator_spec import GeneratorSpec, build_generator

NETWORK_KEYS = ("G", "D", "G_ema")
PERSISTENT_META_KEYS = ("type", "version", "module_src", "class_name", "state")


# ---------------------------------------------------------------------------- inert records
class InertObject:
    """An object from the pickle reduced to its class name and state; its class never runs.

    Persistent EG3D classes keep their `module_src` as text (never compiled); classes pickled by
    reference (torch.nn.Sequential, EG3D's ImportanceRenderer, ...) keep their module path.
    """

    def __init__(self, module_name, class_name, state, module_src=None, persistence_version=None):
        self.module_name = module_name  # None for persistent classes: their module is module_src
        self.class_name = class_name
        self.state = state
        self.module_src = module_src
        self.persistence_version = persistence_version

    @property
    def is_persistent(self) -> bool:
        return self.module_src is not None

    @property
    def qualified_name(self) -> str:
        return self.class_name if self.module_name is None else f"{self.module_name}.{self.class_name}"

    @property
    def is_module(self) -> bool:
        """Whether the state is a torch.nn.Module's __dict__ (parameters, buffers, children)."""
        return isinstance(self.state, dict) and all(
            isinstance(self.state.get(key), dict) for key in ("_parameters", "_buffers", "_modules")
        )

    def __setstate__(self, state):
        # The pickle's BUILD step for objects pickled by reference hands us their __dict__.
        if self.state:
            raise CorruptCheckpointError(f"the state of a {self.qualified_name} is given twice")
        if not isinstance(state, dict):
            raise CorruptCheckpointError(f"a {self.qualified_name} has a state of type {type(state).__name__}, not a dict")
        self.state = state

    def __repr__(self) -> str:
        kind = "persistent" if self.is_persistent else "by reference"
        return f"<InertObject {self.qualified_name} ({kind}), {len(self.state)} state entries>"


class InertEasyDict(dict):
    """dnnlib.util.EasyDict without dnnlib: a dict whose keys also read as attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setstate__(self, state):
        # EasyDict stores everything as items, so a genuine pickle has no attribute state.
        if state:
            raise CorruptCheckpointError("an EasyDict carries unexpected attribute state")


def _placeholder_class(qualified_name: str) -> type:
    """A class that NEWOBJ can instantiate in place of `qualified_name`: an empty InertObject."""
    module_name, class_name = qualified_name.rsplit(".", 1)

    def __new__(cls, *args, **kwargs):
        if args or kwargs:
            raise CorruptCheckpointError(f"{qualified_name} is constructed with arguments, which EG3D never does")
        record = object.__new__(cls)
        InertObject.__init__(record, module_name, class_name, {})
        return record

    return type(f"Inert{class_name}", (InertObject,), {"__new__": __new__, "__module__": __name__})


class InertTensor(torch.Tensor):
    """The tensors the unpickler builds. Only difference to torch.Tensor: no __setstate__.

    Tensor.__setstate__ would let a BUILD opcode re-point a loaded tensor at a storage view of
    any size (torch grows the storage to fit, i.e. unbounded allocation) or attach backward
    hooks; refusing it closes that door. `flatten_state_dict` hands out plain tensors.
    """

    def __setstate__(self, state):
        raise CorruptCheckpointError("the pickle tries to overwrite the state of a loaded tensor")


def as_plain_tensor(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.as_subclass(torch.Tensor).detach()


# ---------------------------------------------------------------------------- allowed callables
class _AllowedCallable:
    """What find_class hands out for an allowed function: our own safe reimplementation.

    Slotted and refusing __setstate__, so a BUILD opcode aimed at it cannot change it.
    """

    __slots__ = ("qualified_name", "_function")

    def __init__(self, qualified_name, function):
        self.qualified_name = qualified_name
        self._function = function

    def __call__(self, *args):
        return self._function(*args)

    def __setstate__(self, state):
        raise CorruptCheckpointError(f"the pickle tries to modify the global {self.qualified_name}")

    def __repr__(self) -> str:
        return f"<allowed global {self.qualified_name}>"


class _TypeMarker(_AllowedCallable):
    """A global that is only ever passed as an argument (e.g. numpy.ndarray), never called."""

    def __init__(self, qualified_name):
        super().__init__(qualified_name, self._refuse_call)

    def _refuse_call(self, *args):
        raise CorruptCheckpointError(f"the pickle calls {self.qualified_name} directly")


def _persistent_object(meta) -> InertObject:
    """Stand-in for torch_utils.persistence._reconstruct_persistent_obj: record, never exec."""
    if not isinstance(meta, dict) or any(key not in meta for key in PERSISTENT_META_KEYS):
        raise CorruptCheckpointError("a persistent object lacks EG3D's meta fields " + ", ".join(PERSISTENT_META_KEYS))
    if meta["type"] != "class":
        raise NotANetworkPickleError(f"a persistent object has type {meta['type']!r}; EG3D only pickles classes")
    class_name, module_src, state = meta["class_name"], meta["module_src"], meta["state"]
    if not isinstance(class_name, str) or not isinstance(module_src, str) or not isinstance(state, dict):
        raise CorruptCheckpointError("a persistent object's class name, source or state has the wrong type")
    return InertObject(None, class_name, dict(state), module_src=module_src, persistence_version=meta["version"])


def _storage_from_bytes(data):
    """Stand-in for torch.storage._load_from_bytes, decoded by torch's weights-only loader."""
    if not isinstance(data, (bytes, bytearray)):
        raise CorruptCheckpointError("a tensor storage is not stored as bytes")
    _check_storage_record(bytes(data))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
            storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for damaged bytes; all mean "corrupt"
        raise CorruptCheckpointError(f"a tensor storage cannot be decoded: {error}") from error
    if not isinstance(storage, torch.TypedStorage):
        raise CorruptCheckpointError(f"a tensor storage decodes to a {type(storage).__name__}")
    return storage


# Element sizes of the storage classes torch's legacy format names (torch.FloatStorage, ...).
_STORAGE_ITEM_SIZES = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
    "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
    "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16,
}


class _StorageRecordReader(pickle.Unpickler):
    """Reads the small pickles of torch's legacy storage record as data: names, never objects."""

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_ITEM_SIZES:
            return name
        raise CorruptCheckpointError(f"a tensor storage names {module}.{name}, which is not a storage type")

    def persistent_load(self, pid):
        return pid


def _check_storage_record(data: bytes) -> None:
    """The element count a storage declares must be what its bytes hold, checked before torch
    reads it: torch allocates the declared size first and reports a mismatch garbled."""
    stream = io.BytesIO(data)
    try:
        for _ in range(3):  # magic number, protocol version, system info: plain data
            _StorageRecordReader(stream).load()
        pid = _StorageRecordReader(stream).load()
        keys = _StorageRecordReader(stream).load()
    except CheckpointError:
        raise
    except Exception as error:  # damaged pickle opcodes raise many builtin types
        raise CorruptCheckpointError(f"a tensor storage record is damaged ({type(error).__name__}: {error})") from error
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and pid[1] in _STORAGE_ITEM_SIZES
            and isinstance(pid[4], int) and isinstance(keys, list) and len(keys) == 1):
        raise CorruptCheckpointError("a tensor storage record does not hold exactly one storage")
    declared, header = pid[4], stream.read(8)
    stored = int.from_bytes(header, "little", signed=True) if len(header) == 8 else -1
    available = len(data) - stream.tell()
    item_size = _STORAGE_ITEM_SIZES[pid[1]]
    if not (declared == stored and 0 <= declared and declared * item_size == available):
        raise CorruptCheckpointError(
            f"a tensor storage declares {declared} elements of {item_size} bytes (its data header says "
            f"{stored}), but holds {available} bytes"
        )


def _check_int_tuple(value, what: str) -> tuple:
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and v >= 0 for v in value):
        raise CorruptCheckpointError(f"a tensor's {what} is not a tuple of non-negative integers")
    return tuple(value)


def _check_view_fits(storage_size: int, offset: int, size: tuple, stride: tuple) -> None:
    # Tensor.set_ silently grows a storage that is too small; a file must never make us
    # allocate memory it does not contain, so the view has to fit in the decoded storage.
    if len(size) != len(stride):
        raise CorruptCheckpointError("a tensor's size and stride have different lengths")
    if 0 in size:
        return
    last_element = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last_element >= storage_size:
        raise CorruptCheckpointError("a tensor view reaches past the end of its storage")
    # A stride-0 or overlapping view shows more elements than its storage holds; every later
    # copy (a .contiguous(), loading it into a parameter) would allocate them all.
    elements = 1
    for n in size:
        elements *= n
    if elements > storage_size - offset:
        shape = "x".join(str(n) for n in size)
        raise CorruptCheckpointError(
            f"a {shape} tensor view repeats the {storage_size - offset} elements of its storage "
            f"(strides {stride}); checkpoint tensors hold their own data"
        )


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """Stand-in for torch._utils._rebuild_tensor_v2 (and _rebuild_tensor without the flags)."""
    if not isinstance(storage, torch.TypedStorage):
        raise CorruptCheckpointError("a tensor is built from something that is not a storage")
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise CorruptCheckpointError("a tensor's storage offset is not a non-negative integer")
    size, stride = _check_int_tuple(size, "size"), _check_int_tuple(stride, "stride")
    if backward_hooks or metadata:
        # Hooks would be callables; EG3D's tensors never carry any (torch warns when it drops them).
        raise CorruptCheckpointError("a tensor carries backward hooks or extra metadata")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
        _check_view_fits(storage.size(), storage_offset, size, stride)
        tensor = torch.empty(0, dtype=storage.dtype).set_(storage, storage_offset, size, stride)
    return tensor.as_subclass(InertTensor)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    """Stand-in for torch._utils._rebuild_parameter(_with_state): just the (detached) data."""
    if not isinstance(data, InertTensor):
        raise CorruptCheckpointError("a parameter is built from something that is not a loaded tensor")
    if backward_hooks:
        raise CorruptCheckpointError("a parameter carries backward hooks")
    return data.detach()


def _ordered_dict(items=()):
    if not isinstance(items, (list, tuple)):
        raise CorruptCheckpointError("an OrderedDict is built from something that is not a list")
    return collections.OrderedDict(items)


def _set(items=()):
    if not isinstance(items, (list, tuple)):
        raise CorruptCheckpointError("a set is built from something that is not a list")
    return set(items)


def _frozenset(items=()):
    return frozenset(_set(items))


def _numpy_dtype(spec, align=False, copy=False):
    """Stand-in for numpy.dtype: plain numeric/text dtypes only, never object or structured ones."""
    if not isinstance(spec, str):
        raise CorruptCheckpointError("a numpy dtype is described by something that is not a string")
    try:
        dtype = np.dtype(spec)
    except TypeError as error:
        raise CorruptCheckpointError(f"unknown numpy dtype {spec!r}") from error
    if dtype.hasobject or dtype.kind == "V":
        raise CorruptCheckpointError(f"numpy dtype {spec!r} may hold Python objects; refused")
    return np.dtype(spec, align=bool(align), copy=bool(copy))


def _numpy_scalar(dtype, data=None):
    """Stand-in for numpy's multiarray.scalar: a numpy scalar decoded from raw bytes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise CorruptCheckpointError("a numpy scalar has an unsupported dtype")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise CorruptCheckpointError("a numpy scalar's bytes do not match its dtype")
    return np.frombuffer(data, dtype=dtype)[0]


def _numpy_empty_array(subtype, shape, dtype_code):
    """Stand-in for numpy's multiarray._reconstruct; ndarray.__setstate__ then fills it in."""
    if not (isinstance(subtype, _TypeMarker) and subtype.qualified_name == "numpy.ndarray"):
        raise CorruptCheckpointError("a numpy array of a subclass other than numpy.ndarray")
    return np.empty((0,), dtype=np.uint8)


# ---------------------------------------------------------------------------- the allow-list
# Non-persistent classes that EG3D networks hold and that pickle by reference (NEWOBJ + BUILD
# of their __dict__). They become InertObjects: harmless, but listed explicitly so that a file
# holding anything unexpected is reported rather than half-read.
BY_REFERENCE_CLASSES = (
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.container.ModuleDict",
    "torch.nn.modules.activation.Softplus",
    "torch.nn.modules.activation.ReLU",
    "torch.nn.modules.activation.LeakyReLU",
    "torch.nn.modules.activation.Sigmoid",
    "torch.nn.modules.activation.Tanh",
    "torch.nn.modules.linear.Identity",
    "torch.nn.modules.linear.Linear",
    "training.triplane.OSGDecoder",
    "training.volumetric_rendering.renderer.ImportanceRenderer",
    "training.volumetric_rendering.ray_sampler.RaySampler",
    "training.volumetric_rendering.ray_marcher.MipRayMarcher2",
)

_FUNCTIONS = {
    "torch_utils.persistence._reconstruct_persistent_obj": _persistent_object,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch.storage._load_from_bytes": _storage_from_bytes,
    "collections.OrderedDict": _ordered_dict,
    "builtins.set": _set,  # protocol 2/3 pickles (older Pythons) spell sets this way
    "builtins.frozenset": _frozenset,
    "numpy.dtype": _numpy_dtype,
    "numpy.core.multiarray.scalar": _numpy_scalar,  # numpy 1.x
    "numpy._core.multiarray.scalar": _numpy_scalar,  # numpy 2.x
    "numpy.core.multiarray._reconstruct": _numpy_empty_array,
    "numpy._core.multiarray._reconstruct": _numpy_empty_array,
}


def _build_allow_list() -> dict:
    allowed = {name: _AllowedCallable(name, function) for name, function in _FUNCTIONS.items()}
    allowed["numpy.ndarray"] = _TypeMarker("numpy.ndarray")
    allowed["dnnlib.util.EasyDict"] = InertEasyDict
    allowed.update({name: _placeholder_class(name) for name in BY_REFERENCE_CLASSES})
    return allowed


ALLOWED_GLOBALS = _build_allow_list()


class _RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves globals only from ALLOWED_GLOBALS."""

    def find_class(self, module, name):
        qualified_name = f"{module}.{name}"
        if qualified_name not in ALLOWED_GLOBALS:
            raise ForbiddenGlobalError(qualified_name)
        return ALLOWED_GLOBALS[qualified_name]

    def persistent_load(self, pid):
        # Plain pickle.dump (EG3D's writer) never emits persistent ids; torch.save's inner
        # pickles do, and they need torch's own loader.
        raise NotANetworkPickleError(
            "the pickle refers to external storage by persistent id, as torch.save files do; "
            "it is not an EG3D network pickle"
        )


# ---------------------------------------------------------------------------- reading a file
def read_network_pickle(path) -> dict:
    """The pickle's top-level dict, networks as InertObjects; nothing from the file is executed."""
    path = Path(path)
    with naming_file(path), open(path, "rb") as file:
        _check_starts_like_a_pickle(file.read(16))
        file.seek(0)
        data = _unpickle(file)
        return _check_network_dict(data)


def _check_starts_like_a_pickle(head: bytes) -> None:
    if not head:
        raise TruncatedCheckpointError("the file is empty")
    # Every pickle written by Python 3 (protocol 2 or later) starts with the PROTO opcode.
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL:
        return
    if head.startswith(b"PK\x03\x04"):
        raise NotANetworkPickleError(
            "this is a zip archive (a torch.save checkpoint or a dataset?), not an EG3D network pickle"
        )
    if head[8:9] == b"{":  # safetensors: 8-byte header length, then a JSON header
        raise NotANetworkPickleError("this looks like a .safetensors file; load it with load_generator")
    raise NotANetworkPickleError("this is not a pickle file (it does not start with a pickle protocol header)")


def _unpickle(file):
    try:
        return _RestrictedUnpickler(file).load()
    except CheckpointError:
        raise
    except EOFError as error:
        raise TruncatedCheckpointError("the file ends in the middle of the pickle (an interrupted download or copy?)") from error
    except pickle.UnpicklingError as error:
        if "truncated" in str(error):
            raise TruncatedCheckpointError(f"the file ends in the middle of the pickle ({error})") from error
        raise CorruptCheckpointError(f"the pickle is damaged: {error}") from error
    except Exception as error:  # damaged opcodes surface as many builtin exception types
        raise CorruptCheckpointError(f"the pickle is damaged: {type(error).__name__}: {error}") from error


def _check_network_dict(data) -> dict:
    if not isinstance(data, dict):
        raise NotANetworkPickleError(
            f"the pickle holds a {_describe_type(data)}, not EG3D's dict of networks (G, D, G_ema, ...)"
        )
    if not any(isinstance(data.get(key), InertObject) for key in NETWORK_KEYS):
        keys = ", ".join(repr(key) for key in list(data)[:8]) or "none"
        raise NotANetworkPickleError(f"the pickle holds a dict without networks G, D or G_ema (keys: {keys})")
    return data


def _describe_type(value) -> str:
    if isinstance(value, InertObject):
        return value.qualified_name
    return type(value).__name__


# ---------------------------------------------------------------------------- the generator
def extract_generator(records: dict, key: str = "G_ema") -> GeneratorSpec:
    """Constructor arguments, rendering options and flat state dict of one network."""
    record = records.get(key)
    if not isinstance(record, InertObject) or not record.is_module:
        found = "nothing" if record is None else f"a {_describe_type(record)}"
        raise NotANetworkPickleError(f"the pickle's {key!r} entry is {found}, not a network")
    if record.class_name != "TriPlaneGenerator":
        raise NotANetworkPickleError(
            f"the pickle's {key!r} is a {record.class_name}, not an EG3D TriPlaneGenerator "
            "(a StyleGAN2/StyleGAN3 pickle?)"
        )
    state = record.state
    if "_init_kwargs" not in state:
        raise NotANetworkPickleError(f"the pickle's {key!r} does not record its constructor arguments")
    init_kwargs = _plain_dict(state["_init_kwargs"], "init_kwargs")
    # The attribute, not the constructor argument: EG3D code may have changed it after construction.
    rendering_kwargs = state.get("rendering_kwargs", init_kwargs.get("rendering_kwargs", {}))
    return GeneratorSpec(
        class_name=record.class_name,
        init_args=tuple(plain_data(state.get("_init_args", ()), "init_args")),
        init_kwargs=init_kwargs,
        rendering_kwargs=_plain_dict(rendering_kwargs, "rendering_kwargs"),
        neural_rendering_resolution=_positive_int(state.get("neural_rendering_resolution", 64), "neural_rendering_resolution"),
        state_dict=flatten_state_dict(record),
    )


def _plain_dict(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise NotANetworkPickleError(f"{where} is a {_describe_type(value)}, not a dict")
    return plain_data(value, where)


def _positive_int(value, where: str) -> int:
    value = plain_data(value, where)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise NotANetworkPickleError(f"{where} is {value!r}, not a positive integer")
    return value


def plain_data(value, where: str):
    """EasyDicts, OrderedDicts and numpy scalars as plain Python values; refuses objects."""
    if isinstance(value, dict):
        return {key: plain_data(item, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain_data(item, f"{where}[{index}]") for index, item in enumerate(value))
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise NotANetworkPickleError(f"{where} holds a {_describe_type(value)}, which cannot be a constructor argument")


def flatten_state_dict(record: InertObject) -> dict[str, torch.Tensor]:
    """The names and tensors nn.Module.state_dict() would give for the recorded module tree."""
    flat: dict[str, torch.Tensor] = {}
    _collect_module_tensors(record, "", flat)
    return flat


def _collect_module_tensors(record, prefix: str, flat: dict) -> None:
    if not isinstance(record, InertObject) or not record.is_module:
        raise CorruptCheckpointError(f"submodule {prefix.rstrip('.') or '(root)'} is a {_describe_type(record)}, not a module")
    state = record.state
    # Buffers registered with persistent=False are not part of nn.Module.state_dict().
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    tensors = list(state["_parameters"].items())
    tensors += [(name, t) for name, t in state["_buffers"].items() if name not in non_persistent]
    for name, tensor in tensors:
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise CorruptCheckpointError(f"{prefix}{name} is a {_describe_type(tensor)}, not a tensor")
        flat[prefix + name] = as_plain_tensor(tensor)
    for name, child in state["_modules"].items():
        if child is not None:
            _collect_module_tensors(child, f"{prefix}{name}.", flat)


def load_eg3d_pickle(path, device="cpu") -> torch.nn.Module:
    """Our TriPlaneGenerator with the weights and options of an official EG3D pickle's G_ema."""
    records = read_network_pickle(path)
    with naming_file(path):
        spec = extract_generator(records, "G_ema")
        return build_generator(spec, device, file_bytes=Path(path).stat().st_size)
