import ctypes
import os
import zlib

import pytest
import torch

import fusednorm


def available_devices():
    devices = ["cpu"]
    if torch.cuda.is_available():
        # A CUDA machine must run the CUDA tests: a build without CUDA kernels is an error there.
        assert fusednorm.has_cuda_kernels(), "CUDA is available but fusednorm was built without CUDA kernels"
        devices.append("cuda")
    return devices


DEVICES = available_devices()

# The CUDA emulator (tests/emu): with --emu-lib (or FUSEDNORM_EMU_LIB), the CPU
# tensors of these tests take the CUDA path: the CUDA kernels, emulated, and the
# general ATen combine CUDA takes. Loaded before any test module makes a tensor,
# so every tensor is under the emulator's access checks.
EMU = None

# What only makes sense for the real CPU kernels or costs minutes under the emulator.
EMU_SKIPPED_FILES = {"test_cpu_kernel_paths.py", "test_bench.py", "test_demo.py", "test_compile.py", "test_convert.py"}


def pytest_addoption(parser):
    parser.addoption(
        "--emu-lib",
        default=os.environ.get("FUSEDNORM_EMU_LIB"),
        help="run the CPU tests through the emulated CUDA kernels of this library (build/emu/libfusednorm_emu.so)",
    )
    parser.addoption(
        "--emu-every",
        type=int,
        default=int(os.environ.get("FUSEDNORM_EMU_EVERY", "1")),
        help="under the emulator, keep every N-th parametrization of each test, plus whatever it takes to cover "
        "every value of every parameter (dtype, activation, layout, shape, ...) at least once",
    )


def pytest_configure(config):
    global EMU
    path = config.getoption("--emu-lib")
    if path:
        # The plugin links against this checkout's library: another fusednorm
        # (an editable install elsewhere) would be a second copy of every op.
        here = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", "..", "python"))
        if not os.path.realpath(fusednorm.__file__).startswith(here + os.sep):
            pytest.exit(f"--emu-lib needs this checkout's fusednorm (PYTHONPATH={here}), got {fusednorm.__file__}", 2)
        EMU = ctypes.CDLL(os.path.abspath(path), mode=ctypes.RTLD_GLOBAL)
        assert EMU.emu_installed() == 1


def _param_key(value):
    return getattr(value, "__name__", None) or str(value)


def _covering_selection(items, every):
    """Every `every`-th item, then items adding a (parameter, value) not yet covered."""
    keep = [item for i, item in enumerate(items) if i % every == 0]
    covered = {(k, _param_key(v)) for item in keep for k, v in getattr(item, "callspec", None).params.items()}
    for item in items:
        if item in keep:
            continue
        pairs = {(k, _param_key(v)) for k, v in item.callspec.params.items()}
        if not pairs <= covered:
            keep.append(item)
            covered |= pairs
    return keep


def pytest_collection_modifyitems(config, items):
    if EMU is None:
        return
    every = max(1, config.getoption("--emu-every"))
    selected, deselected, groups = [], [], {}
    for item in items:
        if os.path.basename(str(item.fspath)) in EMU_SKIPPED_FILES:
            deselected.append(item)
        elif every > 1 and hasattr(item, "callspec"):
            groups.setdefault((str(item.fspath), item.originalname), []).append(item)
        else:
            selected.append(item)
    for group in groups.values():
        # A fixed shuffle, so that the kept items do not all share the first value of the first parameter.
        group.sort(key=lambda item: zlib.crc32(item.nodeid.encode()))
        keep = _covering_selection(group, every)
        selected += keep
        deselected += [item for item in group if item not in keep]
    order = {id(item): i for i, item in enumerate(items)}
    selected.sort(key=lambda item: order[id(item)])
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    items[:] = selected


def pytest_terminal_summary(terminalreporter):
    if EMU is None:
        return
    n = EMU.emu_num_checks()
    totals = (ctypes.c_uint64 * (2 + n))()
    EMU.emu_totals(totals)
    EMU.emu_check_name.restype = ctypes.c_char_p
    findings = ", ".join(f"{EMU.emu_check_name(i).decode()}: {totals[2 + i]}" for i in range(n) if totals[2 + i])
    terminalreporter.write_line(
        f"emulated CUDA kernel launches: {totals[0]}, failed: {totals[1]}; findings: {findings or 'none'}"
    )


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
