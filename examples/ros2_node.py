"""A ROS 2 node that runs an edgedl artifact on camera images and publishes the class.

    ros2 run ... or:  python3 examples/ros2_node.py --ros-args -p model:=runs/drone

Subscribes to ``image`` (sensor_msgs/Image), publishes ``label`` (std_msgs/String, "label score")
and logs latency percentiles every ``report_every`` frames. Parameters: ``model`` (an artifact, or a
run folder: the .tflite the run recommends), ``threads`` (default 1), ``budget_ms`` (0 = none),
``fallback`` (a smaller artifact).

rclpy comes with a ROS 2 installation, not from pip, so it cannot be installed on the machine
that tests edgedl. Everything that does not touch rclpy lives in plain functions and the
``ImageClassifier`` class below, and tests/test_examples.py runs those; the node itself is a thin
shell around them, and the module imports without rclpy.
"""

from __future__ import annotations

import os
import sys

import numpy as np

try:  # import-guarded: the rest of this file works (and is tested) without ROS 2
    import rclpy
    from rclpy.node import Node
    from sensor_msgs.msg import Image
    from std_msgs.msg import String
except ImportError:
    rclpy = None
    Node = object

# sensor_msgs/Image encodings we accept -> (dtype, channels, channel order to RGB)
ENCODINGS = {
    "rgb8": (np.uint8, 3, None),
    "bgr8": (np.uint8, 3, [2, 1, 0]),
    "rgba8": (np.uint8, 4, [0, 1, 2]),
    "bgra8": (np.uint8, 4, [2, 1, 0]),
    "mono8": (np.uint8, 1, None),
    "mono16": (np.uint16, 1, None),
}


def image_to_array(height: int, width: int, encoding: str, step: int, data: bytes, is_bigendian: int = 0) -> np.ndarray:
    """A sensor_msgs/Image's fields to an HxWxC RGB (or HxWx1) array, honouring row padding (step)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unsupported image encoding '{encoding}'; use one of {', '.join(ENCODINGS)}")
    dtype, channels, order = ENCODINGS[encoding]
    dtype = np.dtype(dtype).newbyteorder(">" if is_bigendian else "<")
    row = width * channels * dtype.itemsize
    if step < row or len(data) < step * height:
        raise ValueError(f"image data too short: step {step}, {len(data)} bytes for {height}x{width} {encoding}")
    rows = np.frombuffer(data, np.uint8, count=step * height).reshape(height, step)[:, :row]
    img = np.ascontiguousarray(rows).view(dtype).reshape(height, width, channels)
    if order is not None:
        img = img[:, :, order]
    if dtype.itemsize == 2:  # mono16 -> 0..255 range the model's normalization expects
        img = (img.astype(np.float32) / 257.0)
    return img


class ImageClassifier:
    """The node's work without ROS: load, warm up, predict with an optional latency budget, and
    keep latency records for the periodic report."""

    def __init__(self, model: str, threads: int = 1, budget_ms: float = 0, fallback: str | None = None,
                 history: int = 1000):
        import time

        import edgedl.runtime as rt

        self._clock = time.perf_counter
        self.why = None  # with a run folder: which file it recommended, and why
        if os.path.isdir(model):  # a compress run: the .tflite it recommends
            model, self.why = rt.recommended(model, "tflite")
        self.model = rt.load(model, threads=threads)
        self.model.warmup(10)
        self.fallback = rt.load(fallback, threads=threads) if fallback else None
        self.runner = rt.LatencyBudget(self.model, budget_ms, fallback=self.fallback) if budget_ms else self.model
        self._latency = np.zeros(history)
        self.frames = 0

    def classify(self, image: np.ndarray) -> tuple[str, float]:
        began = self._clock()
        p = self.runner.predict(image)
        self._latency[self.frames % len(self._latency)] = (self._clock() - began) * 1e3
        self.frames += 1
        return p.label, p.score

    def report(self) -> str:
        recent = self._latency[: min(self.frames, len(self._latency))]
        p50, p90, p99 = np.percentile(recent, [50, 90, 99]) if len(recent) else (float("nan"),) * 3
        extra = f", budget {self.runner.stats()}" if self.runner is not self.model else ""
        return f"{self.frames} frames: latency p50 {p50:.2f} ms, p90 {p90:.2f} ms, p99 {p99:.2f} ms{extra}"

    def close(self) -> None:
        self.model.close()
        if self.fallback:
            self.fallback.close()


class EdgedlClassifierNode(Node):
    def __init__(self):
        super().__init__("edgedl_classifier")
        params = {"model": "", "threads": 1, "budget_ms": 0.0, "fallback": "", "report_every": 300}
        for name, default in params.items():
            self.declare_parameter(name, default)
        get = lambda name: self.get_parameter(name).value  # noqa: E731
        if not get("model"):
            raise SystemExit("set the 'model' parameter to an edgedl artifact")
        self.core = ImageClassifier(get("model"), get("threads"), get("budget_ms"), get("fallback") or None)
        self.report_every = get("report_every")
        self.publisher = self.create_publisher(String, "label", 10)
        self.create_subscription(Image, "image", self.on_image, 1)  # depth 1: always the newest frame

    def on_image(self, msg) -> None:
        image = image_to_array(msg.height, msg.width, msg.encoding, msg.step, bytes(msg.data), msg.is_bigendian)
        label, score = self.core.classify(image)
        self.publisher.publish(String(data=f"{label} {score:.3f}"))
        if self.core.frames % self.report_every == 0:
            self.get_logger().info(self.core.report())


def main(argv=None) -> int:
    if rclpy is None:
        print("this node needs ROS 2 (rclpy, sensor_msgs, std_msgs): source your ROS 2 installation first",
              file=sys.stderr)
        return 1
    rclpy.init(args=argv)
    node = EdgedlClassifierNode()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.get_logger().info(node.core.report())
        node.core.close()
        node.destroy_node()
        rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
