"""Shared test setup. A missing dependency is a failure that says what to install."""
import ctypes, os, pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB_PATH = os.path.join(ROOT, "build", "libccvit.so")


def require(module, package):
    try:
        return __import__(module)
    except ImportError:
        pytest.fail(f"missing Python module '{module}': install Debian's {package} (run `make deps`)", pytrace=False)


@pytest.fixture(scope="session")
def lib():
    if not os.path.exists(LIB_PATH):
        pytest.fail(f"{LIB_PATH} not built: run `make`", pytrace=False)
    return ctypes.CDLL(LIB_PATH)
