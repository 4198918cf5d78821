"""Latency statistics, memory, and the conditions a measurement was taken under."""

from edgedl.bench.latency import LatencyResult, measure_latency, peak_rss_mb, side_by_side

__all__ = ["LatencyResult", "measure_latency", "peak_rss_mb", "side_by_side"]
