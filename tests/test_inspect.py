import json

import pytest

from edgedl import api
from edgedl.formats.onnx import graph as onnx_graph
from edgedl.cli import main
from edgedl.errors import EdgedlError, UsageError


def test_macs_and_params_of_a_known_graph(tiny_conv_onnx):
    info = api.inspect(tiny_conv_onnx)
    # Conv 1->8, 3x3 on 8x8 (pad 1): 8*8*8 outputs x 9 MACs = 4608; Linear 8->10: 80.
    assert info["macs"] == 4608 + 80
    # Conv weight 72 + bias 8, Linear 80 + 10 (BatchNorm is folded into the conv on export).
    assert info["params"] == 72 + 8 + 80 + 10
    assert info["ops"]["Conv"] == 1 and ("Gemm" in info["ops"] or "MatMul" in info["ops"])
    assert info["opsets"]["ai.onnx"] == 18
    assert info["inputs"][0]["shape"][1:] == [1, 8, 8] and info["inputs"][0]["dtype"] == "float32"
    assert info["size_bytes"] == tiny_conv_onnx.stat().st_size and info["external_data"] == []


def test_size_includes_external_data(tiny_conv_onnx, tmp_path):
    import onnx

    model = onnx.load(str(tiny_conv_onnx))
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.onnx.data", size_threshold=0)
    info = api.inspect(path)
    assert info["external_data"] == ["ext.onnx.data"]
    assert info["size_bytes"] == path.stat().st_size + (tmp_path / "ext.onnx.data").stat().st_size
    assert info["params"] == 170


def test_inspect_cli_table_and_json(tiny_conv_onnx, capsys):
    with pytest.raises(SystemExit) as code:
        main(["inspect", str(tiny_conv_onnx)])
    assert code.value.code == 0
    out = capsys.readouterr().out
    assert "Conv" in out and "MACs/sample: 4,688" in out and "opsets: ai.onnx 18" in out
    with pytest.raises(SystemExit):
        main(["inspect", str(tiny_conv_onnx), "--json"])
    assert json.loads(capsys.readouterr().out)["macs"] == 4688


def test_inspect_bad_files(tmp_path):
    with pytest.raises(UsageError, match="artifact not found"):
        api.inspect(tmp_path / "none.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff\xff\xff")
    with pytest.raises(EdgedlError, match="is not a readable ONNX file"):
        onnx_graph.summarize(junk)
    other = tmp_path / "model.bin"
    other.write_bytes(b"0")
    with pytest.raises(UsageError, match="no runtime backend for 'model.bin': known file types are .engine, .onnx, .plan, .pt, .pth, .tflite, .trt"):
        api.inspect(other)


def test_a_subclassed_convolution_counts_its_macs():
    """efficientnet_pytorch's Conv2dStaticSamePadding and timm's Conv2dSame subclass nn.Conv2d, pad in
    their own forward and call F.conv2d; Torch-Pruning's counter hooks exact types and counted them
    as zero (EfficientNet-B0: 14.8M MACs in torch, 386M in its ONNX)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from edgedl.formats.torch.pruning import count_macs_params

    class SamePadConv(nn.Conv2d):  # the shape of efficientnet_pytorch's, inlined: no download
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.pad = nn.ZeroPad2d(self.kernel_size[0] // 2)

        def forward(self, x):
            return F.conv2d(self.pad(x), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def net(conv):
        return nn.Sequential(conv(3, 16, 3), nn.ReLU(), conv(16, 16, 3, groups=16), nn.Flatten(), nn.Linear(16 * 64, 10))

    torch.manual_seed(0)
    plain, subclassed = net(lambda *a, **k: nn.Conv2d(*a, padding=1, **k)), net(SamePadConv)
    macs, params = count_macs_params(subclassed, (3, 8, 8))
    expected = count_macs_params(plain, (3, 8, 8))
    assert (macs, params) == expected
    assert macs >= 8 * 8 * 16 * 27 + 8 * 8 * 16 * 9 + 16 * 64 * 10  # both convolutions and the head


def test_macs_follow_shapes_the_graph_computes(tmp_path, monkeypatch):
    """A Reshape whose target the graph computes (Shape, Slice, Concat: how converters such as
    paddle2onnx write attention blocks) leaves ONNX's shape inference without the MatMul's shape;
    ONNX Runtime's symbolic inference follows it. PP-OCRv4's recognizer counted 651M MACs in FP32 and
    690M in INT8 before (13 MatMuls unshaped); both count 702M now."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["batch"]),
        helper.make_node("Concat", ["batch", "target"], ["new_shape"], axis=0),
        helper.make_node("Reshape", ["x", "new_shape"], ["rows"]),  # [1, 8, 3]
        helper.make_node("MatMul", ["rows", "w"], ["y"]),  # [1, 8, 5]: 8 * 5 * 3 MACs
    ]
    inits = [numpy_helper.from_array(np.array(v, dtype=np.int64), n)
             for n, v in (("zero", [0]), ("one", [1]), ("target", [-1, 3]))]
    inits.append(numpy_helper.from_array(np.ones((3, 5), dtype=np.float32), "w"))
    graph = helper.make_graph(nodes, "computed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    path = tmp_path / "computed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    plain = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    rows = [d for v in plain.graph.value_info if v.name == "rows" for d in v.type.tensor_type.shape.dim]
    assert not rows or not all(d.HasField("dim_value") for d in rows)  # ONNX's own inference: unknown
    info = api.inspect(path)
    assert info["macs"] == 8 * 5 * 3 and info["macs_unshaped_nodes"] == []
    # a custom op after it leaves ONNX Runtime's inference incomplete: what it did infer still counts,
    # and nothing is written where the user runs (its infer_shapes saves the model and its weights there)
    model = onnx.load(str(path))
    model.graph.node.append(helper.make_node("Mystery", ["y"], ["z"], domain="custom.ops"))
    model.graph.output[0].name = "z"
    model.opset_import.append(helper.make_opsetid("custom.ops", 1))
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert onnx_graph.count_macs(model) == (8 * 5 * 3, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == before
