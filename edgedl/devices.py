"""Device profiles and detection: which machine a figure belongs to, and what that machine can do.

Profiles are YAML files (top-level ``devices/`` in the repository, ``edgedl/device_profiles`` in
the wheel) validated by :class:`DeviceProfile`. Each section that holds figures names its source.
``--device NAME`` picks a profile; :func:`detect` picks one from the machine's own description
(device-tree model, /etc/nv_tegra_release, NVML, /proc/cpuinfo), read under a root folder so
that a recorded tree can stand in for a device.
"""

from __future__ import annotations

import dataclasses
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgedl.errors import UsageError
from edgedl.runtime.platform import l4t_release, machine as cpu_machine, read_file, version_key

Runtime = Literal["onnxruntime", "litert", "tensorrt", "torch"]
Precision = Literal["fp32", "fp16", "bf16", "int8", "fp8", "int4", "fp4"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Sourced(_Strict):
    """A section whose figures come from the document named in ``source``."""

    source: Optional[str] = None

    @model_validator(mode="after")
    def _figures_name_their_source(self):
        figures = [k for k, v in self if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "count"]
        if figures and not (self.source or "").strip():
            raise ValueError(f"figures {figures} need a 'source' naming where they come from")
        return self


class Cpu(_Sourced):
    model: str
    cores: Optional[int] = Field(None, ge=1)
    max_ghz: Optional[float] = Field(None, gt=0)
    isa: list[str] = []  # instruction-set features that decide INT8 speed (avx512_vnni, amx_int8, asimddp, i8mm)
    note: Optional[str] = None


class Gpu(_Sourced):
    model: str
    compute_capability: Optional[str] = Field(None, pattern=r"^\d+\.\d+$")
    cuda_cores: Optional[int] = Field(None, ge=1)
    note: Optional[str] = None


class Accelerator(_Sourced):
    kind: Literal["dla", "npu", "tpu", "dsp"]
    name: str
    count: int = Field(1, ge=1)
    precisions: list[Precision] = []
    note: Optional[str] = None


class Memory(_Sourced):
    size_gb: float = Field(gt=0)
    type: Optional[str] = None
    bandwidth_gbs: Optional[float] = Field(None, gt=0)
    unified: bool = False  # CPU and GPU share it (Jetson): GPU memory use is read from /proc/meminfo
    note: Optional[str] = None


class Peak(_Sourced):
    """Dense peak throughput, so a result can say what fraction of peak it reached."""

    int8_tops: Optional[float] = Field(None, gt=0)
    fp16_tflops: Optional[float] = Field(None, gt=0)
    fp32_tflops: Optional[float] = Field(None, gt=0)
    note: Optional[str] = None


class SoftwareRelease(_Strict):
    """What one platform release (a JetPack) fixes."""

    l4t: Optional[str] = None
    tensorrt: Optional[str] = None
    cuda: Optional[str] = None
    python: Optional[str] = None  # the Ubuntu's Python: JetPack's TensorRT bindings are built for it alone
    note: Optional[str] = None


class Software(_Sourced):
    jetpack: dict[str, SoftwareRelease] = {}
    default: Optional[str] = None  # the JetPack edgedl plans for when no TensorRT version is given
    note: Optional[str] = None

    @model_validator(mode="after")
    def _default_is_listed(self):
        for name, release in self.jetpack.items():
            for field, value in (("jetpack", name), ("tensorrt", release.tensorrt), ("cuda", release.cuda),
                                 ("python", release.python), ("l4t", release.l4t)):
                if value is not None and not re.fullmatch(r"\d+(\.\d+)*", value):
                    raise ValueError(f"jetpack {name}: {field} '{value}' is not a version number")
        if self.default is not None and self.default not in self.jetpack:
            raise ValueError(f"default JetPack '{self.default}' is not among {sorted(self.jetpack)}")
        return self

    def release(self) -> tuple[str, SoftwareRelease] | None:
        """The default JetPack (else the newest listed) and what it ships."""
        if not self.jetpack:
            return None
        name = self.default or max(self.jetpack, key=version_key)
        return name, self.jetpack[name]


class Rail(_Strict):
    label: str
    role: Literal["total", "module", "sub_rail", "unconnected"]
    parent: Optional[str] = None  # a sub-rail is part of its parent rail: never added to it
    note: Optional[str] = None


class Sensor(_Sourced):
    """A power source the device has, and which of its rails add up to the total."""

    energy: Literal["ina3221", "rapl", "nvml", "cmd"]
    driver: Optional[str] = None  # ina3221 (hwmon), ina3221x (JetPack 4 IIO), ina238 (microwatts)
    rails: list[Rail] = []
    total: list[str] = []  # the rails whose sum is the total (one rail when a sensor measures the input)
    scope: Literal["module", "board", "gpu", "package", "device"] = "module"
    note: Optional[str] = None

    @model_validator(mode="after")
    def _total_is_made_of_known_rails(self):
        labels = {r.label: r for r in self.rails}
        unknown = [t for t in self.total if t not in labels]
        if unknown:
            raise ValueError(f"total names rails {unknown} that are not in rails {sorted(labels)}")
        for name in self.total:
            if labels[name].role in ("sub_rail", "unconnected"):
                raise ValueError(f"total adds '{name}', a {labels[name].role}: it is part of another rail or measures "
                                 "nothing")
        for rail in self.rails:
            if rail.role == "sub_rail" and rail.parent not in labels:
                raise ValueError(f"sub-rail '{rail.label}' needs a parent among {sorted(labels)}")
        return self


class PowerMode(_Sourced):
    name: str
    id: Optional[int] = None  # nvpmodel's mode number
    watts: Optional[float] = Field(None, gt=0)


class Power(_Strict):
    modes: list[PowerMode] = []
    sensors: list[Sensor] = []
    note: Optional[str] = None


class Detect(_Strict):
    """How detection recognises the device: substrings of what the machine reports."""

    device_tree_model: list[str] = []
    nvml_name: list[str] = []


class DeviceProfile(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str
    kind: Literal["jetson", "sbc", "phone", "host", "gpu"]
    arch: Literal["x86_64", "aarch64"]
    generic: bool = False
    cpu: Cpu
    gpu: Optional[Gpu] = None
    accelerators: list[Accelerator] = []
    memory: Optional[Memory] = None
    peak: Optional[Peak] = None
    software: Optional[Software] = None
    runtimes: list[Runtime]
    precisions: list[Precision]
    power: Power = Power()
    detect: Detect = Detect()
    note: Optional[str] = None

    def sensor(self, energy: str | None = None) -> Optional[Sensor]:
        """The profile's sensor for an energy source (its first one when ``energy`` is None)."""
        return next((s for s in self.power.sensors if energy in (None, s.energy)), None)


def profiles_dir() -> Path:
    """Where the YAML profiles are: inside the installed package, else the repository's devices/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "device_profiles", here.parent / "devices"):
        if candidate.is_dir() and any(candidate.glob("*.yaml")):
            return candidate
    raise UsageError("edgedl's device profiles are missing from this install; reinstall edgedl")


def load_profile_file(path: str | Path) -> DeviceProfile:
    """One profile file, validated; a wrong field is named by its path."""
    from edgedl._fs import read_yaml

    path = Path(path)
    raw = read_yaml(path, "device profile")
    try:
        profile = DeviceProfile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise UsageError(f"device profile {path.name}: {where}: {first['msg'].removeprefix('Value error, ')}") from None
    if profile.name != path.stem:
        raise UsageError(f"device profile {path.name}: name '{profile.name}' must match the file name")
    return profile


@lru_cache(maxsize=1)
def _all_profiles() -> dict[str, DeviceProfile]:
    return {p.stem: load_profile_file(p) for p in sorted(profiles_dir().glob("*.yaml"))}


def list_profiles() -> list[DeviceProfile]:
    return list(_all_profiles().values())


def get_profile(name: str) -> DeviceProfile:
    """The profile called ``name``; an unknown name lists the known ones."""
    profiles = _all_profiles()
    if name not in profiles:
        raise UsageError(f"unknown device '{name}'; known devices: {', '.join(profiles)} (see edgedl devices list)")
    return profiles[name]


# ---- detection ------------------------------------------------------------------------------

# L4T release -> JetPack (NVIDIA's JetPack archive); the first prefix that matches wins.
_JETPACK_BY_L4T = (("39.", "7.2"), ("38.4", "7.1"), ("38.2", "7.0"), ("38.", "7"), ("36.4.0", "6.1"),
                   ("36.4.3", "6.2"), ("36.4.4", "6.2.1"), ("36.4.", "6.2.x"), ("36.4", "6.1"), ("36.3", "6.0"), ("35.", "5.1"),
                   ("32.", "4.6"))


def jetpack_for(l4t: Optional[str]) -> Optional[str]:
    if not l4t:
        return None
    return next((jp for prefix, jp in _JETPACK_BY_L4T if l4t.startswith(prefix)), None)


def nvml_names() -> list[str]:
    """Names of the NVIDIA GPUs NVML sees (none without nvidia-ml-py or a driver)."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver, or a Jetson (no NVML device): nothing to name
        return []
    try:
        names = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
            names.append(name.decode() if isinstance(name, bytes) else str(name))
        return names
    finally:
        pynvml.nvmlShutdown()


def detect(root: str | Path = "/", use_nvml: bool = True) -> dict:
    """The profile that fits this machine (or the tree under ``root``), and what it was read from.

    An unknown machine gets the generic profile of its architecture, and the result says so.
    """
    root = Path(root)
    model = read_file(root, "proc/device-tree/model") or read_file(root, "sys/firmware/devicetree/base/model")
    names = nvml_names() if use_nvml and root == Path("/") else []
    l4t = l4t_release(root)
    machine = cpu_machine(root)
    from_tree = root == Path("/") or (root / "proc/cpuinfo").exists()
    seen = {"device_tree_model": model, "l4t": l4t, "jetpack": jetpack_for(l4t), "nvml": names or None,
            "machine": machine if from_tree else f"{machine} (this host's: the tree has no proc/cpuinfo)"}
    for profile in list_profiles():
        d = profile.detect
        if model and any(s.lower() in model.lower() for s in d.device_tree_model):
            return {"profile": profile.name, "generic": False, "why": f"device-tree model '{model}'", "seen": seen}
        hit = next((n for n in names for s in d.nvml_name if s.lower() in n.lower()), None)
        if hit:
            return {"profile": profile.name, "generic": False, "why": f"NVML reports '{hit}'", "seen": seen}
    arch = "aarch64" if machine in ("aarch64", "arm64") else "x86_64"
    generic = next(p for p in list_profiles() if p.generic and p.arch == arch)
    return {"profile": generic.name, "generic": True, "seen": seen,
            "why": f"no profile matches this machine, so the generic {arch} profile applies"}


# ---- the manifest's device record -------------------------------------------------------------

def host_device() -> dict:
    """This machine, as the manifest's ``device`` record."""
    from edgedl.bench import conditions

    return {"name": "host", "kind": "cpu", "description": conditions.cpu_model(),
            "note": "figures were measured on the machine that ran edgedl"}


def named_profile(name: str | None) -> DeviceProfile | None:
    """The profile a recipe or option names; None for this host (no name, or ``host``)."""
    return None if name in (None, "host") else get_profile(name)


@dataclasses.dataclass(frozen=True)
class Device:
    """The device a run or a bench is for, resolved once per run and carried on the run context: the
    profile the user named (None: this host), the manifest's record of it, and where the
    measurements run (``local``, or an executor address such as ``ssh://user@host`` or ``adb://SERIAL``).
    Stages and formats take this object, never the name again."""

    name: str | None
    record: dict
    profile: DeviceProfile | None = None
    on: str = "local"
    reach: dict = dataclasses.field(default_factory=dict)  # the executor's options: ssh_config, accept_new_host, ...

    @classmethod
    def resolve(cls, name: str | None = None, on: str | None = None, reach: dict | None = None,
                facts: dict | None = None) -> "Device":
        """``facts``: what a remote device said of itself (its executor's check), for where the figures
        were measured and whether it is the profile the run names."""
        profile = named_profile(name)
        record = resolve_device(name)
        if on and on != "local":
            cpu = ((facts or {}).get("host") or {}).get("cpu") or "its CPU"
            seen = (facts or {}).get("profile")
            base = {"name": profile.name, "kind": profile.kind, "description": profile.title} if profile else \
                {"name": seen or on, "kind": "cpu", "description": cpu}
            record = {**base, "on": on, "on_device": profile is None or seen == profile.name,
                      "measured_on": f"{on} ({cpu})",
                      "note": f"benchmark figures were measured on {on} ({cpu}, detected as {seen or 'no profile'}); "
                              "the rest of the run on this machine"}
        return cls(name=profile.name if profile else None, record=record, profile=profile, on=on or "local",
                   reach=dict(reach or {}))

    @property
    def remote(self) -> bool:
        return self.on != "local"

    @property
    def elsewhere(self) -> bool:
        """The run's files are made for a device that is not this host (a profile this host is not, or --on)."""
        return self.remote or self.record.get("on_device") is False


def resolve_device(name: str | None = None) -> dict:
    """The device a recipe or command names, as the manifest's ``device`` record.

    None (or ``host``) is this machine. A profile names the device the artifacts are meant for;
    unless detection says this machine is that device, ``on_device`` is False and the record says
    that timings taken here are this host's.
    """
    profile = named_profile(name)
    if profile is None:
        return host_device()
    host = host_device()
    here = detect(use_nvml=False)["profile"]
    record = {"name": profile.name, "kind": profile.kind, "description": profile.title,
              "on_device": here == profile.name, "measured_on": host["description"]}
    if not record["on_device"]:
        record["note"] = (f"artifacts are meant for {profile.title}; figures measured by this run come from the machine "
                          f"that ran edgedl ({host['description']}), not from the device")
    return record
