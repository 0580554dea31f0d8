"""ctypes bindings to build/libccvit.so for the Python tests."""
import ctypes, os
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB_PATH = os.path.join(ROOT, "build", "libccvit.so")
FP = ctypes.POINTER(ctypes.c_float)
c_int, c_long, c_float, c_void = ctypes.c_int, ctypes.c_long, ctypes.c_float, ctypes.c_void_p


MIRRORS = {}  # ctypes Structure -> the C struct it mirrors, checked by every load()


def mirrors(c_name):
    """Class decorator: this ctypes Structure mirrors C's `c_name`; load() checks its layout."""
    def register(cls):
        MIRRORS[cls] = c_name
        return cls
    return register


def check_layouts(lib):
    """Every registered mirror against the library's own sizeof/offsetof (trainer/layouts.c): a field
    that moved, changed type or was added in C fails here, instead of corrupting a test silently."""
    lib.ccvit_sizeof.restype = lib.ccvit_offsetof.restype = ctypes.c_long
    for cls, c_name in MIRRORS.items():
        size = lib.ccvit_sizeof(c_name.encode())
        assert size == ctypes.sizeof(cls), \
            f"{cls.__name__} mirrors {c_name} in {ctypes.sizeof(cls)} bytes, C has {size} (-1: not in layouts.c)"
        for field, _ in cls._fields_:
            off = lib.ccvit_offsetof(c_name.encode(), field.encode())
            assert off == getattr(cls, field).offset, \
                f"{cls.__name__}.{field} at {getattr(cls, field).offset}, {c_name}.{field} at {off} in C"


def load():
    if not os.path.exists(LIB_PATH):
        raise RuntimeError(f"{LIB_PATH} not built: run `make`")
    lib = ctypes.CDLL(LIB_PATH)
    check_layouts(lib)
    lib.softmax_xent_forward.restype = c_float
    lib.attention_scratch_floats.restype = c_long
    lib.vit_create.restype = c_void
    lib.vit_create.argtypes = [c_void, c_int, ctypes.c_uint64]
    lib.vit_params.restype = c_void
    lib.vit_params.argtypes = [c_void]
    for f in ("params_name",):
        getattr(lib, f).restype = ctypes.c_char_p
        getattr(lib, f).argtypes = [c_void, c_int]
    for f in ("params_data", "params_grad"):
        getattr(lib, f).restype = FP
        getattr(lib, f).argtypes = [c_void, c_int]
    lib.params_numel.restype = ctypes.c_size_t
    lib.params_numel.argtypes = [c_void, c_int]
    lib.params_count.argtypes = [c_void]
    lib.params_ndim.argtypes = [c_void, c_int]
    lib.params_dim.argtypes = [c_void, c_int, c_int]
    lib.vit_head_forward.restype = c_float
    lib.vit_head_forward.argtypes = [c_void, c_void, c_int, c_int]
    lib.vit_head_backward.argtypes = [c_void, c_void, c_int, c_int, c_float]
    lib.vit_forward.argtypes = [c_void, c_void, c_void, c_int]
    lib.vit_backward.argtypes = [c_void, c_void, c_void, c_int]
    lib.vit_destroy.argtypes = [c_void]
    lib.params_zero_grad.argtypes = [c_void]
    lib.lr_at_step.restype = ctypes.c_double
    lib.lr_at_step.argtypes = [c_long, ctypes.c_double, ctypes.c_double, c_long, c_long]
    lib.clip_grad_norm.restype = ctypes.c_double
    lib.clip_grad_norm.argtypes = [c_void, c_void, ctypes.c_double]
    lib.adamw_init.argtypes = [c_void, c_void, c_float, c_float, c_float, c_float]
    lib.adamw_step.argtypes = [c_void, c_void, c_float]
    return lib


def ptr(a):
    """Pointer to a contiguous numpy array (float32 / int32 / uint8), or NULL for None."""
    if a is None:
        return None
    assert a.flags["C_CONTIGUOUS"], "array must be contiguous"
    return a.ctypes.data_as(c_void)


def f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


@mirrors("VitConfig")
class VitConfig(ctypes.Structure):
    _fields_ = [("img_size", c_int), ("patch_size", c_int), ("in_chans", c_int), ("embed_dim", c_int),
                ("depth", c_int), ("num_heads", c_int), ("mlp_ratio", c_float), ("qkv_bias", c_int),
                ("layer_scale_init", c_float), ("num_classes", c_int), ("use_mask_token", c_int)]


@mirrors("AdamW")
class AdamWState(ctypes.Structure):
    _fields_ = [("beta1", c_float), ("beta2", c_float), ("eps", c_float), ("weight_decay", c_float),
                ("m", FP), ("v", FP), ("step", c_long), ("total", ctypes.c_size_t),
                ("norm_partials", c_void), ("norm_chunks", c_int)]


class CVit:
    """A C model created through vit_create, with its tensors viewed as numpy arrays by name."""

    def __init__(self, lib, max_batch, seed=0, **cfg):
        self.lib = lib
        self.cfg = VitConfig(**cfg)
        self.handle = lib.vit_create(ctypes.byref(self.cfg), max_batch, seed)
        self.table = lib.vit_params(self.handle)

    def names(self):
        return [self.lib.params_name(self.table, i).decode() for i in range(self.lib.params_count(self.table))]

    def _view(self, i, getter):
        shape = [self.lib.params_dim(self.table, i, k) for k in range(self.lib.params_ndim(self.table, i))]
        n = self.lib.params_numel(self.table, i)
        return np.ctypeslib.as_array(getter(self.table, i), shape=(n,)).reshape(shape)

    def tensor(self, name):
        return self._view(self.names().index(name), self.lib.params_data)

    def grad(self, name):
        return self._view(self.names().index(name), self.lib.params_grad)

    def __del__(self):
        try:
            self.lib.vit_destroy(self.handle)
        except Exception:
            pass


def setup_vit_views(lib):
    for f in ("vit_final_tokens", "vit_logits"):
        getattr(lib, f).restype = FP
        getattr(lib, f).argtypes = [c_void]
    lib.vit_head_dfinal.restype = c_void
    lib.vit_head_dfinal.argtypes = [c_void]
    lib.vit_drop_scales.restype = FP
    lib.vit_drop_scales.argtypes = [c_void]
    lib.vit_set_regularisation.argtypes = [c_void, c_float, c_float]
    lib.vit_sample_drop_path.argtypes = [c_void, c_int, ctypes.c_uint64, ctypes.c_int64, ctypes.c_int64]
    lib.params_set_lr_scale.argtypes = [c_void, c_int, c_float]
    lib.params_lr_scale.restype = c_float
    lib.params_lr_scale.argtypes = [c_void, c_int]
    lib.vit_set_layer_decay.argtypes = [c_void, ctypes.c_double]
    lib.vit_block_output.restype = FP
    lib.vit_block_output.argtypes = [c_void, c_int]


def view(p, shape):
    return np.ctypeslib.as_array(p, shape=(int(np.prod(shape)),)).reshape(shape)
