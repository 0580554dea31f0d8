"""Shared test setup. A missing dependency is a failure that says what to install."""
import ctypes, importlib.util, os, sys, pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB_PATH = os.path.join(ROOT, "build", "libccvit.so")
# The one place the tests find the PyTorch reference (`import torch_twin`).
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))


# Every test module imports these at its top: without them pytest would stop at collection
# with a bare ModuleNotFoundError, so name the Debian packages here, before collection.
_MISSING = [pkg for mod, pkg in (("numpy", "python3-numpy"),) if importlib.util.find_spec(mod) is None]
if _MISSING:
    pytest.exit(f"missing Python modules: install Debian's {', '.join(_MISSING)} (run `make deps`)", returncode=4)


def require(module, package):
    try:
        return __import__(module)
    except ImportError:
        pytest.fail(f"missing Python module '{module}': install Debian's {package} (run `make deps`)", pytrace=False)


@pytest.fixture(scope="session")
def lib():
    if not os.path.exists(LIB_PATH):
        pytest.fail(f"{LIB_PATH} not built: run `make`", pytrace=False)
    import cbind  # every mirrored struct's layout against the library's own (trainer/layouts.c)
    lib = ctypes.CDLL(LIB_PATH)
    cbind.check_layouts(lib)
    return lib
