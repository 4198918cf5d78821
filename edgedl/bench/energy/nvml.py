"""NVIDIA GPU energy from NVML's total energy counter (nvidia-ml-py; millijoules, Volta and newer).

The counter updates every 10-100 ms, so a window shorter than ``min_window_s`` is stretched by
repeating the workload (bench says so), and the uncertainty allows one update period of lag at
each end. Jetsons answer NotSupported: that is a null with its reason, never a zero.
"""

from __future__ import annotations

import os

from edgedl.bench.energy.base import EnergySource, EnergyUnavailable

UPDATE_PERIOD_S = 0.1  # the slowest update NVIDIA documents for the counter


class NvmlSource(EnergySource):
    name = "nvml"
    kind = "counter"
    min_window_s = 2.0  # 20 updates or more: the lag at the ends stays a few percent

    def check(self) -> None:
        try:
            import pynvml
        except ImportError:
            raise EnergyUnavailable("NVML energy needs nvidia-ml-py: pip install 'edgedl[gpu]'") from None
        self._nvml = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise EnergyUnavailable(f"NVML cannot start here ({exc}): no NVIDIA driver or GPU") from None
        index = int(self.arg or os.environ.get("EDGEDL_NVML_INDEX", "0"))
        try:
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._gpu = pynvml.nvmlDeviceGetName(self._handle)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except pynvml.NVMLError_NotSupported:
            raise EnergyUnavailable("NVML reports its energy counter NotSupported on this GPU (Jetsons and GPUs "
                                    "before Volta): use --energy ina3221 on a Jetson") from None
        except pynvml.NVMLError as exc:
            raise EnergyUnavailable(f"NVML GPU {index}: {exc}") from None

    def describe(self) -> str:
        name = self._gpu.decode() if isinstance(self._gpu, bytes) else self._gpu
        return f"NVML total energy counter of {name} (GPU board power only)"

    def _read(self) -> float:
        return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1e3

    def _counter_uncertainty(self, avg_w: float) -> float:
        return 2 * UPDATE_PERIOD_S * avg_w

    def memory_used_mb(self) -> float:
        """GPU memory in use on the device (all processes), MiB."""
        return self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20
