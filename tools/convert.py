#!/usr/bin/env python3
"""Convert a LeMeViT PyTorch checkpoint to a self-describing safetensors file.

    convert.py SRC -o DST.safetensors [--ema] [--dca-scale official|head_dim]
               [--head-dim 32] [--dtype keep|f32|f16|bf16]

Accepted inputs (SPEC "Checkpoints as users have them"): {"model": sd},
timm {"state_dict", "state_dict_ema", "epoch", "arch", "args"}, the seed
user's {"epoch", "state_dict", "Best_ACC"[, "state_dict_ema"]}, a plain state
dict, DataParallel "module." prefixes, fp16/bf16 tensors, safetensors, and a
whole pickled module (torch.save(model)) whose classes cannot be imported.

Security: torch files are read by this script's own zip/pickle reader.  Its
unpickler admits only the few callables that rebuild tensors and containers;
every other global becomes an inert record that just stores its arguments and
state, so nothing from the file is ever executed (no torch.load here).

The architecture is inferred from tensor names and shapes; every tensor is
then checked against the shapes that architecture implies.  Errors exit with
status 2 and one line "convert.py: error: ...".
"""

import argparse
import collections
import io
import json
import math
import os
import pickle
import re
import struct
import sys
import zipfile

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: don't spin on busy CPUs

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lemevit_ref import VARIANTS  # noqa: E402  (single source of the variant table)

PROG = "convert.py"
FORMAT_VERSION = "1"


class ConvertError(Exception):
    """A user-facing conversion failure (reported as one line, exit 2)."""


# --------------------------------------------------------------------------
# safetensors (hand-written: the package is not available/needed)

_ST_DTYPES = {  # safetensors name -> torch dtype
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
    "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32,
    "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}
# Integer views with the same element size, used to move raw bytes through
# numpy (which has no bfloat16).
_RAW_VIEW = {1: (torch.uint8, "u1"), 2: (torch.int16, "<i2"), 4: (torch.int32, "<i4"),
             8: (torch.int64, "<i8")}


def _elsize(dtype):
    return torch.empty((), dtype=dtype).element_size()


def _tensor_bytes(t):
    """Raw little-endian bytes of a tensor in C order."""
    t = t.detach().contiguous().reshape(-1)
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    view_dtype, np_dtype = _RAW_VIEW[t.element_size()]
    return t.view(view_dtype).numpy().astype(np_dtype, copy=False).tobytes()


def _tensor_from_bytes(buf, dtype, shape, byteorder="little"):
    """Tensor (owning its memory) from raw bytes of the given byte order."""
    es = _elsize(dtype)
    view_dtype, np_dtype = _RAW_VIEW[es]
    if byteorder == "big" and es > 1:
        np_dtype = ">" + np_dtype[1:]
    arr = np.frombuffer(buf, dtype=np_dtype).astype(np_dtype.replace(">", "<"), copy=True)
    t = torch.from_numpy(arr)
    if dtype == torch.bool:
        t = t != 0
    elif dtype != view_dtype:
        t = t.view(dtype)
    return t.reshape(shape)


def write_safetensors(path, tensors, metadata=None):
    """Write {name: tensor} as safetensors: u64 LE header length, JSON header,
    data.  Tensors are laid out contiguously in name order (the reference
    reader rejects gaps); the header is space-padded so the data section
    starts at an 8-byte boundary."""
    header = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError("safetensors metadata must map str to str")
        header["__metadata__"] = dict(metadata)
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name]
        if t.dtype not in _ST_NAMES:
            raise ValueError("cannot store %s of dtype %s" % (name, t.dtype))
        b = _tensor_bytes(t)
        header[name] = {"dtype": _ST_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * ((-(8 + len(hbytes))) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def read_safetensors(path):
    """Read a safetensors file -> (OrderedDict name -> tensor, metadata dict)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ConvertError("%s: file too short to be safetensors (%d bytes)" % (path, len(data)))
    (hlen,) = struct.unpack("<Q", data[:8])
    if hlen > len(data) - 8:
        raise ConvertError("%s: safetensors header claims %d bytes but the file has only %d "
                           "(truncated?)" % (path, hlen, len(data) - 8))
    try:
        header = json.loads(data[8:8 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ConvertError("%s: corrupt safetensors header (%s)" % (path, e))
    if not isinstance(header, dict):
        raise ConvertError("%s: safetensors header is not a JSON object" % path)
    body = memoryview(data)[8 + hlen:]
    meta = header.pop("__metadata__", None) or {}
    out = collections.OrderedDict()
    for name, info in header.items():
        try:
            dtype = _ST_DTYPES[info["dtype"]]
            shape = [int(s) for s in info["shape"]]
            b, e = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ConvertError("%s: bad safetensors entry for %r: %r" % (path, name, info))
        need = math.prod(shape) * _elsize(dtype)
        if not (0 <= b <= e <= len(body)) or e - b != need:
            raise ConvertError("%s: tensor %r has data_offsets [%d, %d] but needs %d bytes of a "
                               "%d-byte data section (truncated or corrupt)"
                               % (path, name, b, e, need, len(body)))
        out[name] = _tensor_from_bytes(body[b:e], dtype, shape)
    return out, meta


def _is_safetensors(head):
    if len(head) < 9:
        return False
    (hlen,) = struct.unpack("<Q", head[:8])
    return 2 <= hlen < (1 << 32) and head[8:9] == b"{"


# --------------------------------------------------------------------------
# restricted unpickler for torch.save files

class Record:
    """Inert stand-in for an object whose class the reader does not admit.

    It stores constructor arguments and pickled state and nothing else; no
    code of the original class (or of any callable named by the pickle) runs.
    """
    _rec_module = "?"
    _rec_name = "?"

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        self.__dict__.update(_rec_args=args, _rec_kwargs=kwargs, _rec_state=None,
                             _rec_items=[], _rec_dict={})
        return self

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.__dict__["_rec_state"] = state

    # pickle's APPEND(S)/SETITEM(S) on list/dict subclasses
    def append(self, v):
        self._rec_items.append(v)

    def extend(self, vs):
        self._rec_items.extend(vs)

    def __setitem__(self, k, v):
        self._rec_dict[k] = v

    def __repr__(self):
        return "<inert %s.%s>" % (self._rec_module, self._rec_name)

    @property
    def qualname(self):
        return "%s.%s" % (self._rec_module, self._rec_name)


_record_classes = {}


def _record_class(module, name):
    key = (module, name)
    if key not in _record_classes:
        _record_classes[key] = type("Inert_" + re.sub(r"\W", "_", name), (Record,),
                                    {"_rec_module": module, "_rec_name": name})
    return _record_classes[key]


def is_module_record(obj):
    """True for an inert record of a pickled torch.nn.Module."""
    st = getattr(obj, "_rec_state", None) if isinstance(obj, Record) else None
    return isinstance(st, dict) and "_parameters" in st and "_modules" in st


class _StorageType:
    """What a torch.*Storage global resolves to: just its element dtype."""

    def __init__(self, dtype):
        self.dtype = dtype


class _Storage:
    """A loaded storage: a flat tensor of its element dtype."""

    def __init__(self, flat):
        self.flat = flat


class _PendingStorage:
    """Placeholder used in the first pass over a legacy (non-zip) file."""

    def __init__(self, key, dtype, numel):
        self.key, self.dtype, self.numel = key, dtype, numel


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64, "IntStorage": torch.int32, "ShortStorage": torch.int16,
    "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}
_DTYPE_NAMES = {
    "float32": torch.float32, "float": torch.float32, "float64": torch.float64,
    "double": torch.float64, "float16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "int64": torch.int64, "long": torch.int64,
    "int32": torch.int32, "int": torch.int32, "int16": torch.int16, "int8": torch.int8,
    "uint8": torch.uint8, "bool": torch.bool,
}


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    if isinstance(storage, _PendingStorage):
        return None  # first pass over a legacy file: shape only matters later
    if not isinstance(storage, _Storage):
        raise ValueError("tensor rebuilt from a non-storage object %r" % (storage,))
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    flat = storage.flat
    need = int(storage_offset) + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    if all(size) and need > flat.numel():
        raise ValueError("tensor of size %s/stride %s at offset %d overruns its storage of %d "
                         "elements" % (list(size), list(stride), storage_offset, flat.numel()))
    return torch.as_strided(flat, size, stride, int(storage_offset)).clone()


def _rebuild_parameter(data, *unused):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    # func came through find_class, so it is one of ours or an inert record.
    return func(*args)


def _safe_codecs_encode(obj, encoding="utf-8", errors="strict"):
    # protocol-2 pickles spell bytes as _codecs.encode(str, "latin1")
    if not isinstance(obj, str):
        raise ValueError("_codecs.encode of a non-string")
    return obj.encode(encoding, errors)


def _safe_reconstructor(cls, base, state):
    # copyreg._reconstructor (protocol 0/1 objects): never call base.__init__.
    if isinstance(cls, type) and issubclass(cls, Record):
        obj = cls.__new__(cls, base, state)
    else:
        obj = _record_class("copyreg", "_reconstructor")(cls, base, state)
    return obj


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "list"): list,
    ("builtins", "dict"): dict,
    ("builtins", "tuple"): tuple,
    ("_codecs", "encode"): _safe_codecs_encode,
    ("copyreg", "_reconstructor"): _safe_reconstructor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
}
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def _load_build(self):
    # BUILD only ever fills an inert record.  On anything else the state is
    # dropped: setattr on real objects (functions, classes) is never allowed.
    state = self.stack.pop()
    inst = self.stack[-1]
    if isinstance(inst, Record):
        inst.__setstate__(state)


class _RestrictedUnpickler(pickle._Unpickler):
    """Unpickler that resolves only allow-listed globals (see module doc).

    Built on the pure-Python unpickler so that BUILD can be restricted too;
    torch pickles are small (tensor data lives outside them), so speed is
    not an issue."""

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = _load_build

    def __init__(self, file, load_storage):
        super().__init__(file)
        self._load_storage = load_storage

    def find_class(self, module, name):
        module = _PY2_MODULES.get(module, module)
        fn = _SAFE_GLOBALS.get((module, name))
        if fn is not None:
            return fn
        if module in ("torch", "torch.cuda") and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and name in _DTYPE_NAMES:
            return _DTYPE_NAMES[name]
        return _record_class(module, name)

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid:
            raise pickle.UnpicklingError("unsupported persistent id %r" % (pid,))
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage" or self._load_storage is None:
            raise pickle.UnpicklingError("unsupported persistent id %r" % (pid[:1],))
        return self._load_storage(pid)


def _unpickle(data, load_storage):
    return _RestrictedUnpickler(io.BytesIO(data), load_storage).load()


def _storage_dtype(storage_type):
    if not isinstance(storage_type, _StorageType):
        raise pickle.UnpicklingError("storage of unsupported type %r" % (storage_type,))
    return storage_type.dtype


def _read_torch_zip(path):
    """torch.save zip format: <root>/data.pkl + <root>/data/<key> (+ byteorder)."""
    try:
        zf = zipfile.ZipFile(path)
        names = zf.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ConvertError("%s: truncated or corrupt zip archive (%s)" % (path, e))
    with zf:
        pkls = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkls:
            if any(n.endswith("constants.pkl") for n in names):
                raise ConvertError("%s is a TorchScript archive; save the state_dict instead"
                                   % path)
            raise ConvertError("%s is a zip archive without data.pkl (not a torch.save file)"
                               % path)
        root = pkls[0][:-len("data.pkl")]
        byteorder = "little"
        if root + "byteorder" in names:
            byteorder = zf.read(root + "byteorder").decode("ascii").strip()
        cache = {}

        def load_storage(pid):
            _, stype, key, _location, numel = pid[:5]
            dtype = _storage_dtype(stype)
            key = str(key)
            if key not in cache:
                raw = zf.read(root + "data/" + key)
                es = _elsize(dtype)
                if len(raw) < int(numel) * es:
                    raise ValueError("storage %s has %d bytes, expected %d"
                                     % (key, len(raw), int(numel) * es))
                raw = raw[:len(raw) - len(raw) % es]
                cache[key] = _Storage(_tensor_from_bytes(raw, dtype, [-1], byteorder))
            return cache[key]

        return _unpickle(zf.read(pkls[0]), load_storage)


_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


def _read_pickle_stream(path):
    """Legacy (pre-1.6, or _use_new_zipfile_serialization=False) torch files,
    or a bare pickle.  Legacy layout: magic, protocol, sys_info, main pickle,
    sorted storage keys, then per key: int64 count + raw data.  Storage bytes
    come after the pickle, so it is read twice: once to learn the storages,
    once to build the tensors."""
    with open(path, "rb") as f:
        data = f.read()
    bio = io.BytesIO(data)
    first = _RestrictedUnpickler(bio, None).load()
    if not (isinstance(first, int) and first == _LEGACY_MAGIC):
        if bio.tell() != len(data):
            raise ConvertError("%s: trailing data after a pickle (not a torch checkpoint)" % path)
        return first, "pickle"
    _RestrictedUnpickler(bio, None).load()  # protocol version
    sys_info = _RestrictedUnpickler(bio, None).load()
    little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
    main_start = bio.tell()
    pending = {}

    def pend(pid):
        _, stype, key, _loc, numel = pid[:5]
        pending.setdefault(str(key), _PendingStorage(str(key), _storage_dtype(stype), int(numel)))
        return pending[str(key)]

    _RestrictedUnpickler(bio, pend).load()
    keys = _RestrictedUnpickler(bio, None).load()
    storages = {}
    for key in keys:
        key = str(key)
        if key not in pending:
            raise ValueError("storage key %s listed but never referenced" % key)
        dtype = pending[key].dtype
        count_raw = bio.read(8)
        if len(count_raw) != 8:
            raise EOFError("file ends inside storage %s" % key)
        (count,) = struct.unpack("<q" if little else ">q", count_raw)
        nbytes = count * _elsize(dtype)
        raw = bio.read(nbytes)
        if len(raw) != nbytes:
            raise EOFError("file ends inside storage %s" % key)
        storages[key] = _Storage(_tensor_from_bytes(raw, dtype, [-1],
                                                    "little" if little else "big"))

    def load_storage(pid):
        key = str(pid[2])
        st = storages[key]
        view = pid[5] if len(pid) > 5 else None
        if view:  # (view_key, offset, size): a slice of the root storage
            _vkey, off, size = view
            st = _Storage(st.flat[int(off):int(off) + int(size)])
        return st

    bio.seek(main_start)
    return _RestrictedUnpickler(bio, load_storage).load(), "legacy torch"


# --------------------------------------------------------------------------
# locating the state dict inside whatever was loaded

def module_state_dict(rec, prefix=""):
    """Flat state dict of an inert nn.Module record (parameters, persistent
    buffers, recursively through _modules), dotted names as torch makes them."""
    st = rec._rec_state
    out = collections.OrderedDict()
    non_persistent = st.get("_non_persistent_buffers_set") or set()
    for name, t in (st.get("_parameters") or {}).items():
        if t is not None:
            out[prefix + name] = t
    for name, t in (st.get("_buffers") or {}).items():
        if t is not None and name not in non_persistent:
            out[prefix + name] = t
    for name, sub in (st.get("_modules") or {}).items():
        if sub is None:
            continue
        if not is_module_record(sub):
            raise ConvertError("submodule %s%s is not a pickled module (%r)" % (prefix, name, sub))
        out.update(module_state_dict(sub, prefix + name + "."))
    return out


def _is_tensor_dict(obj):
    return isinstance(obj, dict) and obj and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _describe(obj):
    if isinstance(obj, dict):
        keys = sorted(map(str, obj))
        more = "" if len(keys) <= 8 else ", ... (%d keys)" % len(keys)
        return "a dict with keys [%s%s]" % (", ".join(keys[:8]), more)
    if isinstance(obj, Record):
        return "an object of class %s" % obj.qualname
    return "a %s" % type(obj).__name__


def _as_state_dict(obj, what):
    if is_module_record(obj):
        return module_state_dict(obj), "whole pickled module %s" % obj.qualname
    if _is_tensor_dict(obj):
        return obj, what
    raise ConvertError("%s is %s, not a state dict" % (what, _describe(obj)))


def extract_state_dict(obj, ema=False):
    """Find the state dict in a loaded checkpoint object -> (sd, form)."""
    if ema:
        if not (isinstance(obj, dict) and "state_dict_ema" in obj):
            raise ConvertError("--ema given but the checkpoint has no 'state_dict_ema' "
                               "(it is %s)" % _describe(obj))
    if is_module_record(obj):
        return _as_state_dict(obj, "")
    if _is_tensor_dict(obj):
        return obj, "plain state_dict"
    if isinstance(obj, dict):
        if "state_dict" in obj or "state_dict_ema" in obj:
            if "Best_ACC" in obj:
                base = "seed training checkpoint"
            elif "arch" in obj or "args" in obj:
                base = "timm checkpoint"
            else:
                base = "checkpoint dict"
            key = "state_dict_ema" if ema else "state_dict"
            if key not in obj:
                raise ConvertError("checkpoint has no %r (keys: %s)" % (key, sorted(map(str, obj))))
            sd, form = _as_state_dict(obj[key], "%s['%s']" % (base, key))
            return sd, form
        if "model" in obj:
            sd, form = _as_state_dict(obj["model"], "{'model': state_dict}")
            return sd, form
    raise ConvertError("no LeMeViT state dict found: the file holds %s (expected a state dict, "
                       "{'model': sd}, {'state_dict': sd, ...} or a pickled module)"
                       % _describe(obj))


def load_checkpoint(path, ema=False):
    """Load any supported checkpoint form -> (OrderedDict name -> tensor, form).

    Names have DataParallel "module." prefixes removed; num_batches_tracked
    and other bookkeeping are kept (infer/validate drop them)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise ConvertError("cannot read %s: %s" % (path, e.strerror or e))
    if not head:
        raise ConvertError("%s is empty" % path)
    try:
        if _is_safetensors(head):
            sd, _meta = read_safetensors(path)
            sd = dequantize_state_dict(sd, path)
            if ema:
                raise ConvertError("--ema given but a safetensors file holds a single state dict")
            form = "safetensors"
        else:
            if head[:4] == b"PK\x03\x04":
                obj, container = _read_torch_zip(path), "torch zip"
            else:
                obj, container = _read_pickle_stream(path)
            sd, form = extract_state_dict(obj, ema)
            if container != "torch zip":
                form += ", %s format" % container
    except ConvertError:
        raise
    except Exception as e:  # corrupt/truncated/odd pickles: never a traceback
        raise ConvertError("%s is not a readable checkpoint (%s: %s)"
                           % (path, type(e).__name__, str(e) or "truncated or corrupt"))
    sd = collections.OrderedDict(sd)
    stripped = 0
    while sd and all(k.startswith("module.") for k in sd):
        sd = collections.OrderedDict((k[len("module."):], v) for k, v in sd.items())
        stripped += 1
    if stripped:
        form += ", 'module.' prefix stripped"
    return sd, form


# --------------------------------------------------------------------------
# architecture inference and validation

ATTN_KEYS = {
    "C": ("q", "kv", "proj"),
    "D": ("qkv1", "qkv2", "proj_x", "proj_c"),
    "D2": ("qv1", "kv2", "proj_x", "proj_c"),
    "S": ("qkv", "proj"),
}
# out-features multiple of C per attention projection
_ATTN_OUT = {"q": 1, "kv": 2, "proj": 1, "qkv1": 3, "qkv2": 3, "proj_x": 1, "proj_c": 1,
             "qv1": 2, "kv2": 2, "qkv": 3}


def _fmt(shape):
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def _bn(shapes, prefix, c):
    for n in ("weight", "bias", "running_mean", "running_var"):
        shapes[prefix + n] = (c,)


def _linear(shapes, prefix, cin, cout):
    shapes[prefix + "weight"] = (cout, cin)
    shapes[prefix + "bias"] = (cout,)


def expected_shapes(arch):
    """Every state-dict key (num_batches_tracked excluded) an architecture
    implies, with its shape, per SPEC "State-dict keys"."""
    depths, dims, kinds = arch["depths"], arch["dims"], arch["kinds"]
    r, m, cin_img, k = arch["mlp_ratio"], arch["meta_tokens"], arch["in_chans"], arch["num_classes"]
    c0 = dims[0]
    s = collections.OrderedDict()
    s["meta_tokens"] = (m, c0)
    s["downsample_layers.0.0.weight"] = (c0 // 2, cin_img, 3, 3)
    s["downsample_layers.0.0.bias"] = (c0 // 2,)
    _bn(s, "downsample_layers.0.1.", c0 // 2)
    s["downsample_layers.0.3.weight"] = (c0, c0 // 2, 3, 3)
    s["downsample_layers.0.3.bias"] = (c0,)
    _bn(s, "downsample_layers.0.4.", c0)
    for i in range(1, len(dims)):
        if kinds[i - 1] != "C":
            s["downsample_layers.%d.0.weight" % i] = (dims[i], dims[i - 1], 3, 3)
            s["downsample_layers.%d.0.bias" % i] = (dims[i],)
            _bn(s, "downsample_layers.%d.1." % i, dims[i])
    for i, c in enumerate(dims):
        cin = c0 if i == 0 else dims[i - 1]
        p = "meta_token_downsample.%d." % i
        _linear(s, p + "0.", cin, 4 * cin)
        s[p + "1.weight"] = s[p + "1.bias"] = (4 * cin,)
        _linear(s, p + "3.", 4 * cin, c)
        s[p + "4.weight"] = s[p + "4.bias"] = (c,)
    for i, (d, c, kind) in enumerate(zip(depths, dims, kinds)):
        for j in range(d):
            p = "stages.%d.%d." % (i, j)
            s[p + "pos_embed.weight"] = (c, 1, 3, 3)
            s[p + "pos_embed.bias"] = (c,)
            for n in ("norm1.", "norm2."):
                s[p + n + "weight"] = s[p + n + "bias"] = (c,)
            _linear(s, p + "mlp.0.", c, r * c)
            _linear(s, p + "mlp.3.", r * c, c)
            for a in ATTN_KEYS[kind]:
                _linear(s, p + "attn.%s." % a, c, _ATTN_OUT[a] * c)
    _bn(s, "norm.", dims[-1])
    s["norm_c.weight"] = s["norm_c.bias"] = (dims[-1],)
    _linear(s, "head.", dims[-1], k)
    return s


def _need(sd, key, ndim=None, why=""):
    t = sd.get(key)
    if t is None:
        raise ConvertError("missing tensor %s%s" % (key, why))
    if ndim is not None and t.dim() != ndim:
        raise ConvertError("%s has shape %s, expected a %d-d tensor" % (key, _fmt(t.shape), ndim))
    return t.shape


def infer_arch(sd, head_dim=32):
    """Architecture from names/shapes -> dict(depths, dims, kinds, mlp_ratio,
    head_dim, meta_tokens, in_chans, num_classes).  head_dim cannot be seen in
    the weights and is taken from the argument.  Raises ConvertError."""
    if "meta_tokens" not in sd:
        some = ", ".join(sorted(sd)[:4])
        raise ConvertError("not a LeMeViT state dict: no 'meta_tokens' tensor (first keys: %s)"
                           % some)
    m, c0 = _need(sd, "meta_tokens", 2)
    blocks = collections.defaultdict(set)
    for k in sd:
        mt = re.match(r"stages\.(\d+)\.(\d+)\.", k)
        if mt:
            blocks[int(mt.group(1))].add(int(mt.group(2)))
    if not blocks:
        raise ConvertError("no stages.<i>.<j>.* tensors found")
    n_st = max(blocks) + 1
    for i in range(n_st):
        if sorted(blocks.get(i, ())) != list(range(len(blocks.get(i, ())))) or not blocks.get(i):
            raise ConvertError("stage %d has blocks %s; expected 0..n-1 with n >= 1"
                               % (i, sorted(blocks.get(i, ()))))
    depths = [len(blocks[i]) for i in range(n_st)]
    dims, kinds, ratios = [], [], []
    for i in range(n_st):
        stage_kinds = set()
        for j in range(depths[i]):
            p = "stages.%d.%d.attn." % (i, j)
            names = {k[len(p):].split(".")[0] for k in sd if k.startswith(p)}
            # Any one distinctive projection names the kind, so that a single
            # missing tensor is reported as missing, not as an unknown kind.
            if names & {"qkv1", "qkv2"}:
                kind = "D"
            elif names & {"qv1", "kv2"}:
                kind = "D2"
            elif "qkv" in names:
                kind = "S"
            elif names & {"q", "kv"}:
                kind = "C"
            else:
                raise ConvertError("cannot tell the attention kind of stages.%d.%d: attn tensors %s "
                                   "(expected q/kv, qkv1, qv1 or qkv)" % (i, j, sorted(names)))
            stage_kinds.add(kind)
        if len(stage_kinds) != 1:
            raise ConvertError("stage %d mixes attention kinds %s; a stage has one kind"
                               % (i, sorted(stage_kinds)))
        kinds.append(stage_kinds.pop())
        (c,) = _need(sd, "stages.%d.0.norm1.weight" % i, 1)
        dims.append(int(c))
        hidden = _need(sd, "stages.%d.0.mlp.0.weight" % i, 2)[0]
        if hidden % c:
            raise ConvertError("stages.%d.0.mlp.0.weight has %d outputs, not an integer multiple "
                               "of the stage width %d (mlp_ratio must be an integer)"
                               % (i, hidden, c))
        ratios.append(hidden // c)
    if len(set(ratios)) != 1:
        raise ConvertError("mlp_ratio differs between stages (%s); one ratio for all stages is "
                           "supported" % ",".join(map(str, ratios)))
    if dims[0] != c0:
        raise ConvertError("meta_tokens has width %d but stage 0 has width %d" % (c0, dims[0]))
    in_chans = _need(sd, "downsample_layers.0.0.weight", 4)[1]
    num_classes = _need(sd, "head.weight", 2, " (models without a classifier head are not "
                                              "supported)")[0]
    for i in range(1, n_st):
        if kinds[i - 1] == "C" and dims[i] != dims[i - 1]:
            raise ConvertError("stage %d follows a C stage (identity downsample) but its width %d "
                               "differs from %d" % (i, dims[i], dims[i - 1]))
    if c0 % 2:
        raise ConvertError("stage 0 width %d must be even (stem halves it)" % c0)
    bad = [c for c in dims if c % head_dim]
    if bad:
        raise ConvertError("stage widths %s are not multiples of head_dim %d (use --head-dim)"
                           % (dims, head_dim))
    return dict(depths=depths, dims=dims, kinds=kinds, mlp_ratio=ratios[0], head_dim=head_dim,
                meta_tokens=int(m), in_chans=int(in_chans), num_classes=int(num_classes))


def drop_bookkeeping(sd):
    return collections.OrderedDict((k, v) for k, v in sd.items()
                                   if not k.endswith("num_batches_tracked"))


def validate(sd, arch):
    """Check every tensor against expected_shapes(arch); raise one error
    listing the problems (missing, unexpected, wrongly shaped)."""
    exp = expected_shapes(arch)
    problems = []
    for k, shp in exp.items():
        if k not in sd:
            problems.append("missing %s (expected shape %s)" % (k, _fmt(shp)))
        elif tuple(sd[k].shape) != tuple(shp):
            problems.append("%s has shape %s, expected %s" % (k, _fmt(sd[k].shape), _fmt(shp)))
    for k, t in sd.items():
        if k not in exp:
            hint = ""
            mt = re.match(r"downsample_layers\.(\d+)\.", k)
            if mt and 0 < int(mt.group(1)) < len(arch["kinds"]) and \
                    arch["kinds"][int(mt.group(1)) - 1] == "C":
                hint = " (the downsample after a C stage must be Identity)"
            problems.append("unexpected %s of shape %s%s" % (k, _fmt(t.shape), hint))
        elif not t.is_floating_point():
            problems.append("%s has non-float dtype %s" % (k, t.dtype))
    if problems:
        more = "" if len(problems) <= 6 else "; ... and %d more" % (len(problems) - 6)
        raise ConvertError("state dict does not match the inferred architecture (%s): %s%s"
                           % (arch_summary(arch), "; ".join(problems[:6]), more))


def check_values(sd):
    """Refuse here the values the library would refuse at load: NaN/Inf
    anywhere (a diverged training run), and a negative BatchNorm running_var
    (its fold gives NaN weights)."""
    problems = []
    for k, t in sd.items():
        flat = t.detach().reshape(-1)
        bad = (~torch.isfinite(flat)).nonzero()
        if len(bad):
            i = int(bad[0])
            problems.append("%s contains %s at flat index %d" % (k, "NaN" if flat[i] != flat[i] else "Inf", i))
        elif k.endswith("running_var") and bool((flat < 0).any()):
            i = int((flat < 0).nonzero()[0])
            problems.append("%s is %g at index %d: a variance cannot be negative" % (k, float(flat[i]), i))
    if problems:
        more = "" if len(problems) <= 6 else "; ... and %d more" % (len(problems) - 6)
        raise ConvertError("the checkpoint holds values a model cannot run with (a diverged or corrupt "
                           "training run?): %s%s" % ("; ".join(problems[:6]), more))


def variant_name(arch):
    for name, v in VARIANTS.items():
        if all(list(v[f]) == list(arch[f]) if isinstance(v[f], (tuple, list)) else v[f] == arch[f]
               for f in ("depths", "dims", "kinds", "mlp_ratio", "head_dim", "meta_tokens")):
            return name
    return "custom"


def arch_summary(arch):
    return "depths=%s dims=%s kinds=%s mlp_ratio=%d" % (
        ",".join(map(str, arch["depths"])), ",".join(map(str, arch["dims"])),
        ",".join(arch["kinds"]), arch["mlp_ratio"])


def make_metadata(arch, dca_scale, source):
    return {
        "lemevit.format_version": FORMAT_VERSION,
        "lemevit.variant": variant_name(arch),
        "lemevit.depths": ",".join(map(str, arch["depths"])),
        "lemevit.dims": ",".join(map(str, arch["dims"])),
        "lemevit.kinds": ",".join(arch["kinds"]),
        "lemevit.mlp_ratio": str(arch["mlp_ratio"]),
        "lemevit.head_dim": str(arch["head_dim"]),
        "lemevit.meta_tokens": str(arch["meta_tokens"]),
        "lemevit.in_chans": str(arch["in_chans"]),
        "lemevit.num_classes": str(arch["num_classes"]),
        "lemevit.dca_scale": dca_scale,
        "lemevit.source": source,
    }


_OUT_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
_DTYPE_NAMES = {v: k for k, v in _OUT_DTYPES.items()}

# --dtype int8: the Linear layers' weights (every 2-D .weight but the
# classifier's head.weight, which the library runs in fp32 in every precision)
# stored as int8 per output channel, symmetric, with their scales in
# "<name>_scale" (F32, one per row); everything else f32. The arithmetic is
# exactly the library's load-time quantisation (PackedInt8Linear::pack), all
# in float32:
#   s = max|w| / 127 (1 for an all-zero row), q = clamp(nearbyint(w / s), -127, 127)
# so an int8 model loads the same numbers from either file, and fp32/bf16
# models run on the dequantised weights q * s.
INT8_SCALE_SUFFIX = "_scale"


def dequantize_state_dict(sd, path):
    """An int8 file (--dtype int8) read back as the f32 weights it stands for."""
    out = collections.OrderedDict()
    for k, v in sd.items():
        if k.endswith(INT8_SCALE_SUFFIX) and k[:-len(INT8_SCALE_SUFFIX)] in sd:
            continue
        if v.dtype == torch.int8:
            s = sd.get(k + INT8_SCALE_SUFFIX)
            if s is None or v.dim() != 2 or s.dtype != torch.float32 or tuple(s.shape) != (v.shape[0],):
                raise ConvertError("%s: int8 tensor %s needs an F32 %s%s of shape [%d]"
                                   % (path, k, k, INT8_SCALE_SUFFIX, v.shape[0] if v.dim() else 0))
            v = dequantize_int8(v, s)
        out[k] = v
    return out


def is_int8_weight(key, t):
    return key.endswith(".weight") and key != "head.weight" and t.dim() == 2 and t.is_floating_point()


def quantize_int8(w):
    """(q int8, s float32 per row) for a 2-D weight, as the C++ loader computes them."""
    w = w.detach().to(torch.float32).numpy()
    amax = np.abs(w).max(axis=1)
    s = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    q = np.clip(np.rint(w / s[:, None]), -127, 127).astype(np.int8)
    return torch.from_numpy(q), torch.from_numpy(s)


def dequantize_int8(q, s):
    return (q.to(torch.float32) * s[:, None]).contiguous()


def convert_tensors(sd, dtype):
    """The tensors as the output file stores them in --dtype `dtype`."""
    out = collections.OrderedDict()
    for k, v in sd.items():
        if dtype == "int8":
            if is_int8_weight(k, v):
                out[k], out[k + INT8_SCALE_SUFFIX] = quantize_int8(v)
                continue
            v = v.to(torch.float32)
        elif dtype != "keep":
            v = v.to(_OUT_DTYPES[dtype])
        elif v.dtype == torch.float64:
            v = v.to(torch.float32)  # the library reads F32/F16/BF16 (and int8 + scales)
        if not bool(torch.isfinite(v).all()):
            raise ConvertError("%s overflows %s: its largest magnitude is %g%s" % (
                k, _DTYPE_NAMES.get(v.dtype, v.dtype), float(sd[k].abs().max()),
                " (f16 holds up to 65504: choose --dtype f32 or bf16)" if v.dtype == torch.float16 else ""))
        out[k] = v.contiguous()
    return out


def convert(src, dst, ema=False, dca_scale="official", head_dim=32, dtype="keep"):
    """Whole conversion; returns (arch, metadata, tensors).  Raises ConvertError."""
    sd, form = load_checkpoint(src, ema=ema)
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise ConvertError("state dict entry %s is not a tensor" % k)
    sd = drop_bookkeeping(sd)
    arch = infer_arch(sd, head_dim=head_dim)
    validate(sd, arch)
    check_values(sd)
    out = convert_tensors(sd, dtype)
    meta = make_metadata(arch, dca_scale, "%s (%s)" % (os.path.basename(src), form))
    if os.path.abspath(dst) == os.path.abspath(src):
        raise ConvertError("output would overwrite the input %s" % src)
    try:
        write_safetensors(dst, out, meta)
    except OSError as e:
        raise ConvertError("cannot write %s: %s" % (dst, e.strerror or e))
    return arch, meta, out


def main(argv=None):
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="checkpoint (.pth/.pt/.tar/.safetensors)")
    ap.add_argument("-o", "--output", required=True, help="output .safetensors")
    ap.add_argument("--ema", action="store_true", help="take state_dict_ema (error if absent)")
    ap.add_argument("--dca-scale", choices=("official", "head_dim"), default="official",
                    help="D/D2 attention scale the model was trained with: 'official' "
                         "(ViTAE-Transformer code) or 'head_dim' (seed article's copy)")
    ap.add_argument("--head-dim", type=int, default=32, help="attention head width (default 32)")
    ap.add_argument("--dtype", choices=("keep", "f32", "f16", "bf16", "int8"), default="keep",
                    help="output tensor dtype (keep: as stored; f64 becomes f32; int8: Linear "
                         "weights int8 per output channel with their scales, the rest f32)")
    args = ap.parse_args(argv)
    if args.head_dim <= 0:
        ap.error("--head-dim must be positive")
    try:
        arch, meta, out = convert(args.src, args.output, ema=args.ema, dca_scale=args.dca_scale,
                                  head_dim=args.head_dim, dtype=args.dtype)
    except ConvertError as e:
        print("%s: error: %s" % (PROG, e), file=sys.stderr)
        return 2
    dts = sorted({_ST_NAMES[t.dtype] for t in out.values()})
    nparam = sum(t.numel() for k, t in out.items()
                 if "running_" not in k and not k.endswith(INT8_SCALE_SUFFIX))
    print("%s: read %s" % (PROG, meta["lemevit.source"]), file=sys.stderr)
    print("%s: %s (%s), %d classes, in_chans %d, dca_scale %s, dtype %s, %d tensors, %.2fM "
          "params -> %s" % (PROG, meta["lemevit.variant"], arch_summary(arch), arch["num_classes"],
                            arch["in_chans"], args.dca_scale, "+".join(dts), len(out),
                            nparam / 1e6, args.output), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
