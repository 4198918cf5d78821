"""An ONNX file: a graph and tensors (no code runs when it opens). Its external data must lie
inside its folder, and edgedl parses a file from elsewhere in a child process first, so a file
that crashes protobuf's parser becomes one error line. The run takes it as its fp32 artifact,
with dynamic dimensions fixed from ``--input-shape`` or the data, and its IR version and opset
brought within what the installed ONNX Runtime reads."""

from __future__ import annotations

from pathlib import Path

from edgedl.errors import EdgedlError, UsageError
from edgedl.models.importers import Importer


class OnnxImporter(Importer):
    name = "onnx"
    module = None
    opens = ("parses a protobuf graph and tensors, in a child process first; external data only from inside the "
             "model's folder")
    cannot = ("an ONNX file has no PyTorch module: edgedl quantizes, evaluates, benchmarks and builds TensorRT "
              "engines from it; to prune, distill, train or convert to TFLite, bring the PyTorch model")

    @classmethod
    def matches(cls, spec: str) -> bool:
        return spec.lower().endswith(".onnx")

    def check(self, spec: str, *, trust: bool = False, weights: str | None = None, input_shapes=None) -> None:
        self.inputs(spec, input_shapes or {})
        if weights is not None:
            raise UsageError(f"--weights goes with an architecture; {Path(spec).name} is an ONNX file with its own weights")

    def inputs(self, spec: str, input_shapes: dict) -> list:
        """The model's inputs as TensorInfos, ``input_shapes`` applied; refuses a file that does not
        parse, external data outside the folder, and --input-shape names or ranks that do not fit."""
        from edgedl.formats.onnx import graph as onnx_graph
        from edgedl.formats.onnx.export import check_input_shapes, fit_onnxruntime

        path = Path(spec)
        if not path.is_file():
            raise UsageError(f"model file not found: {spec}")
        try:
            onnx_graph.probe(path)
            model = onnx_graph.load_graph(path)
        except EdgedlError as exc:
            raise UsageError(str(exc)) from None
        if not onnx_graph.external_files(model, path.parent):  # with weights outside, bring() fits it
            fit_onnxruntime(model, path.name)  # an opset ONNX Runtime cannot read is refused before any work
        check_input_shapes(model, dict(input_shapes))
        return onnx_graph.input_infos(model, dict(input_shapes))

    def load(self, spec: str, *, trust: bool = False, weights: str | None = None, kwargs: dict | None = None):
        return None  # no torch module: the export stage brings the file in (bring)

    def bring(self, spec: str, input_shapes: dict, sample_shape: tuple | None):
        """The model with its weights inside, dynamic dimensions fixed and fitted to the installed ONNX
        Runtime; (ModelProto, fixes, opset, [what fitting changed])."""
        from edgedl.formats.onnx.export import fix_dimensions

        model, fixes, fitted = fix_dimensions(Path(spec), dict(input_shapes), sample_shape)
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        return model, fixes, opset, fitted
