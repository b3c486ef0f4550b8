"""Hardware detection with injected readings, the recommendation over simulated machines,
and check_hw.py run for real on this machine."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pynvml
import pytest

from xrouter_core.setup import hardware
from xrouter_core.setup.hardware import GPU, Machine, Probes, detect, recommend

ROOT = Path(__file__).resolve().parents[1]
GIB = 1024**3


def machine(**kw) -> Machine:
    base = dict(
        cpu_model="Test CPU",
        physical_cores=8,
        logical_cores=16,
        ram_gib=32.0,
        available_ram_gib=20.0,
        os="Linux 6.1",
        arch="x86_64",
    )
    base.update(kw)
    return Machine(**base)


def nvidia(name: str, gib: float, cc: float | None = 8.6) -> GPU:
    return GPU("nvidia", name, gib, cc)


# (description, machine, engine, classifier size, local viable)
MACHINES = [
    ("H100 80 GB", machine(gpus=(nvidia("H100", 80.0, 9.0),)), "tensorrt-llm", "7B", True),
    (
        "A100 40 GB, exactly the threshold",
        machine(gpus=(nvidia("A100", 40.0, 8.0),)),
        "tensorrt-llm",
        "7B",
        True,
    ),
    (
        "V100 32 GB: too old for TensorRT-LLM",
        machine(gpus=(nvidia("V100", 32.0, 7.0),)),
        "vllm",
        "7B",
        True,
    ),
    ("RTX 4090 24 GB", machine(gpus=(nvidia("RTX 4090", 24.0, 8.9),)), "vllm", "7B", True),
    ("RTX 3060 12 GB", machine(gpus=(nvidia("RTX 3060", 12.0),)), "vllm", "3B", True),
    ("GTX 1650 4 GB", machine(gpus=(nvidia("GTX 1650", 4.0, 7.5),)), "vllm", "0.5B", True),
    (
        "two cards: the largest counts",
        machine(gpus=(nvidia("T4", 16.0, 7.5), nvidia("L40S", 48.0, 8.9))),
        "tensorrt-llm",
        "7B",
        True,
    ),
    # Cards llama.cpp only offloads to: sized like the CPU (8 cores -> 1.5B).
    (
        "GT 1030 2 GB: too small for vLLM",
        machine(gpus=(nvidia("GT 1030", 2.0, 6.1),)),
        "llama.cpp",
        "1.5B",
        True,
    ),
    (
        "Maxwell 8 GB: compute 5.2",
        machine(gpus=(nvidia("GTX 980", 8.0, 5.2),)),
        "llama.cpp",
        "1.5B",
        True,
    ),
    (
        "M2 Pro 32 GB",
        machine(os="Darwin 23", arch="arm64", apple_silicon=True, ram_gib=32.0),
        "mlx",
        "7B",
        True,
    ),
    (
        "M1 8 GB",
        machine(os="Darwin 22", arch="arm64", apple_silicon=True, ram_gib=8.0),
        "mlx",
        "3B",
        True,
    ),
    (
        "AMD RX 7900 XTX with ROCm",
        machine(gpus=(GPU("amd", "RX 7900 XTX", 24.0),), rocm=True),
        "llama.cpp",
        "7B",
        True,
    ),
    (
        "AMD GPU without ROCm: CPU sizes",
        machine(gpus=(GPU("amd", "RX 6600", 8.0),), physical_cores=4),
        "llama.cpp",
        "0.5B",
        True,
    ),
    ("16-core CPU, 64 GB", machine(physical_cores=16, ram_gib=64.0), "llama.cpp", "3B", True),
    ("8-core CPU, 16 GB", machine(physical_cores=8, ram_gib=16.0), "llama.cpp", "1.5B", True),
    (
        "2-core CPU, 24 GB (this CI machine)",
        machine(physical_cores=2, ram_gib=24.0),
        "llama.cpp",
        "0.5B",
        True,
    ),
    (
        "2-core CPU, 2 GB: cloud only",
        machine(physical_cores=2, ram_gib=2.0),
        "llama.cpp",
        "0.5B",
        False,
    ),
    (
        "4-core board, 1.5 GB: only 270M fits",
        machine(physical_cores=4, ram_gib=1.5),
        "llama.cpp",
        "270M",
        False,
    ),
    ("1 GB: nothing fits", machine(physical_cores=4, ram_gib=1.0), "llama.cpp", "270M", False),
    (
        "1-core CPU, 8 GB: cloud only",
        machine(physical_cores=1, ram_gib=8.0),
        "llama.cpp",
        "0.5B",
        False,
    ),
]


@pytest.mark.parametrize(
    ("machine_", "engine", "size", "viable"),
    [m[1:] for m in MACHINES],
    ids=[m[0] for m in MACHINES],
)
def test_recommendation_table(machine_, engine, size, viable):
    rec = recommend(machine_)
    assert (rec.engine, rec.classifier_size, rec.local_viable) == (engine, size, viable)
    assert rec.base_url.startswith("http://localhost:")
    assert rec.model in rec.start_command
    if not viable:
        assert "cloud" in rec.reason


# ---- detection with injected readings ---------------------------------------------------


class FakeNVML:
    """The parts of pynvml that detect() calls, with real pynvml error types."""

    NVMLError = pynvml.NVMLError
    NVML_ERROR_LIBRARY_NOT_FOUND = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    NVML_ERROR_NO_PERMISSION = pynvml.NVML_ERROR_NO_PERMISSION
    NVML_ERROR_DRIVER_NOT_LOADED = pynvml.NVML_ERROR_DRIVER_NOT_LOADED

    def __init__(self, cards=(), init_error: int | None = None):
        self.cards = list(cards)
        self.init_error = init_error
        self.shut_down = False

    def nvmlInit(self):
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)

    def nvmlShutdown(self):
        self.shut_down = True

    def nvmlDeviceGetCount(self):
        return len(self.cards)

    def nvmlDeviceGetHandleByIndex(self, index):
        return self.cards[index]

    def nvmlDeviceGetName(self, handle):
        return handle[0].encode()  # older pynvml versions return bytes

    def nvmlDeviceGetMemoryInfo(self, handle):
        return type("Memory", (), {"total": int(handle[1] * GIB)})()

    def nvmlDeviceGetCudaComputeCapability(self, handle):
        return handle[2]


def probes(tmp_path: Path, **kw) -> Probes:
    base = Probes(
        system=lambda: "Linux",
        release=lambda: "6.1",
        arch=lambda: "x86_64",
        cpu_model=lambda: "Test CPU",
        cpu_counts=lambda: (8, 16),
        memory=lambda: (32 * GIB, 20 * GIB),
        apple_silicon=lambda system, arch: False,
        nvml=lambda: FakeNVML(),
        sys_root=tmp_path,
        which=lambda name: None,
    )
    return replace(base, **kw)


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "no NVML library"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "no permission"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "not loaded"),
        (pynvml.NVML_ERROR_UNKNOWN, "NVML failed"),
    ],
)
def test_nvml_failures_become_one_note(tmp_path, error, words):
    found = detect(probes(tmp_path, nvml=lambda: FakeNVML(init_error=error)))
    assert found.gpus == ()
    assert len(found.notes) == 1 and words in found.notes[0]
    assert recommend(found).engine == "llama.cpp"


def test_missing_nvidia_ml_py_is_a_note(tmp_path):
    def missing():
        raise ImportError("No module named 'pynvml'")

    found = detect(probes(tmp_path, nvml=missing))
    assert found.notes == (
        "NVIDIA: the nvidia-ml-py package is not installed, so NVIDIA GPUs were not checked",
    )


def test_nvidia_cards_are_read_through_nvml(tmp_path):
    fake = FakeNVML(cards=[("NVIDIA A100-SXM4-80GB", 80.0, (8, 0)), ("Tesla T4", 15.0, (7, 5))])
    found = detect(probes(tmp_path, nvml=lambda: fake))
    assert found.nvidia == (
        GPU("nvidia", "NVIDIA A100-SXM4-80GB", 80.0, 8.0),
        GPU("nvidia", "Tesla T4", 15.0, 7.5),
    )
    assert fake.shut_down and found.notes == ()
    assert recommend(found).engine == "tensorrt-llm"


def test_amd_gpu_and_rocm_from_sysfs(tmp_path):
    device = tmp_path / "sys/class/drm/card1/device"
    device.mkdir(parents=True)
    (device / "vendor").write_text("0x1002\n")
    (device / "mem_info_vram_total").write_text(str(24 * GIB))
    (device / "product_name").write_text("Radeon RX 7900 XTX")
    # Connector entries such as card1-DP-1 are not GPUs.
    (tmp_path / "sys/class/drm/card1-DP-1").mkdir()
    (tmp_path / "opt/rocm").mkdir(parents=True)
    found = detect(probes(tmp_path))
    assert found.amd == (GPU("amd", "Radeon RX 7900 XTX", 24.0),)
    assert found.rocm
    rec = recommend(found)
    assert rec.engine == "llama.cpp" and rec.classifier_size == "7B"


def test_apple_silicon(tmp_path):
    found = detect(
        probes(
            tmp_path,
            system=lambda: "Darwin",
            arch=lambda: "arm64",
            apple_silicon=lambda system, arch: system == "Darwin",
            memory=lambda: (16 * GIB, 8 * GIB),
            nvml=lambda: FakeNVML(init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND),
        )
    )
    assert found.apple_silicon
    rec = recommend(found)
    assert rec.engine == "mlx" and rec.model.startswith("mlx-community/")


def test_report_round_trips_through_json(tmp_path):
    report = hardware.Report(*(lambda m: (m, recommend(m)))(detect(probes(tmp_path))))
    again = hardware.Report.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again == report


# ---- for real on this machine -----------------------------------------------------------


def test_check_hw_runs_here():
    done = subprocess.run(
        [sys.executable, str(ROOT / "check_hw.py")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "Engine:" in done.stdout and "Classifier:" in done.stdout
    # This machine has no NVIDIA driver: one line says so, no traceback.
    nvidia_lines = [line for line in done.stdout.splitlines() if "NVIDIA" in line]
    assert len(nvidia_lines) <= 1


def test_check_hw_json_is_what_recommend_says():
    done = subprocess.run(
        [sys.executable, str(ROOT / "check_hw.py"), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    machine_ = Machine.from_dict(doc["machine"])
    assert machine_.ram_gib > 0 and machine_.logical_cores >= 1
    assert doc["recommendation"]["engine"] in hardware.ENGINES
    assert (
        doc["recommendation"]
        == hardware.Report(machine_, recommend(machine_)).to_dict()["recommendation"]
    )
