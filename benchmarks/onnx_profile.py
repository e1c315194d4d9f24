"""Where onnxruntime spends the time of an exported model: per operator type, and its slowest
convolutions with their groups and weight shapes, for dense, SSC, pruned and
depthwise-separable variants at the same budget.

    python benchmarks/onnx_profile.py [--model cifar_resnet32] [--density 0.1] [--batch 64]
                                      [--threads 1] [--runs 10] [--out FILE.json]
                                      [--reorder-form] [--depthwise-variant]

Each variant is exported with ``ssconv.export_onnx`` (as ``ssconv export`` does) and run with
onnxruntime's profiler; the figures are the mean kernel time per run of each node, summed by
operator type. Record the output in docs/benchmarks.md.

``--reorder-form`` also profiles SSC exported the way it was before 2026-12-03
(``ssc_reorders``): each shuffled layer's shuffle and residue reorders as Reshape / Transpose
/ Reshape, not as the two index gathers of ``SSConv2dInference.use_gathered_input``.
``--depthwise-variant`` also profiles the preset ``ssc_depthwise`` (``period="depthwise"``: one
spatial kernel per filter in every layer) at the same density.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path
from unittest import mock

import torch

from ssconv import convert
from ssconv.bench.models import Variant, build_variants
from ssconv.deploy import export_onnx
from ssconv.layers.inference import SSConv2dInference
from ssconv.utils.malloc import tune_malloc
from ssconv.utils.timing import machine_info


def profile_onnx(path: Path, x: torch.Tensor, threads: int, runs: int) -> dict:
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(path)).graph
    nodes = {n.name: n for n in graph.node}
    shapes = {i.name: list(i.dims) for i in graph.initializer}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.enable_profiling = True
    opts.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}
    session.run(None, feed)  # warm-up, in the profile too: dropped below
    for _ in range(runs):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_node: dict[str, list[float]] = collections.defaultdict(list)
    op_of: dict[str, str] = {}
    for e in kernels:
        name = e["name"][: -len("_kernel_time")]
        per_node[name].append(e["dur"] / 1000)  # ms
        op_of[name] = e["args"].get("op_name", "?")
    by_op: dict[str, float] = collections.defaultdict(float)
    convs = []
    for name, times in per_node.items():
        ms = sum(times[-runs:]) / runs  # the timed runs, not the warm-up
        by_op[op_of[name]] += ms
        if op_of[name] in ("Conv", "FusedConv"):
            node = nodes.get(name)
            groups = next((a.i for a in node.attribute if a.name == "group"), 1) if node else None
            weight = shapes.get(node.input[1]) if node is not None and len(node.input) > 1 else None
            convs.append({"node": name, "ms": ms, "group": groups, "weight": weight})
    convs.sort(key=lambda c: -c["ms"])
    return {
        "total_ms": sum(by_op.values()),
        "by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
        "node_counts": dict(collections.Counter(n.op_type for n in graph.node)),
        "slowest_convs": convs[:8],
    }


def main(argv=None) -> int:
    tune_malloc()  # as the ssconv command does (ssconv.utils.malloc)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="cifar_resnet32")
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--out", default=None, help="also write the figures to this JSON file")
    p.add_argument(
        "--reorder-form",
        action="store_true",
        help="also profile SSC with its channel reorders as Reshape / Transpose (ssc_reorders)",
    )
    p.add_argument(
        "--depthwise-variant",
        action="store_true",
        help="also profile ssc_depthwise (period='depthwise') at the same density",
    )
    args = p.parse_args(argv)
    torch.manual_seed(0)
    variants = build_variants(args.model, args.density)
    if args.depthwise_variant:
        dense = next(v for v in variants if v.name == "dense").model
        report = convert(dense, density=args.density, period="depthwise", warn_coverage=False)
        variants.insert(2, Variant("ssc_depthwise", report.model))
    x = torch.randn(args.batch, 3, 32, 32)
    result = {"model": args.model, "density": args.density, "batch": args.batch, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for v in variants:
            path = Path(tmp) / f"{v.name}.onnx"
            export_onnx(v.model.eval(), path, tuple(x.shape[1:]), batch=2, check=False)
            result["variants"][v.name] = profile_onnx(path, x, args.threads, args.runs)
            if v.name == "ssc" and args.reorder_form:
                path = Path(tmp) / "ssc_reorders.onnx"
                # freeze(target="onnxruntime") as it was: no layer takes the gathered form.
                with mock.patch.object(
                    SSConv2dInference, "gathered_input_applies", lambda self: False
                ):
                    export_onnx(v.model.eval(), path, tuple(x.shape[1:]), batch=2, check=False)
                result["variants"]["ssc_reorders"] = profile_onnx(path, x, args.threads, args.runs)
    result["machine"] = machine_info(torch.device("cpu"))
    result["machine"]["threads"] = args.threads
    dense = result["variants"].get("dense", {}).get("total_ms")
    print(f"{args.model} at {args.density}, batch {args.batch}, {args.threads} thread(s)\n")
    print("| variant | onnxruntime ms | vs dense | Conv ms | reorders ms | nodes |")
    print("|---|---|---|---|---|---|")
    for name, r in result["variants"].items():
        conv = r["by_op"].get("Conv", 0) + r["by_op"].get("FusedConv", 0)
        perm = sum(r["by_op"].get(op, 0) for op in ("Transpose", "Reshape", "Gather"))
        ratio = f"{dense / r['total_ms']:.2f}x" if dense else "-"
        print(
            f"| {name} | {r['total_ms']:.1f} | {ratio} | {conv:.1f} | {perm:.1f} | "
            f"{sum(r['node_counts'].values())} |"
        )
    for name, r in result["variants"].items():
        print(f"\n{name}: slowest convolutions")
        for c in r["slowest_convs"][:5]:
            print(f"  {c['ms']:6.2f} ms  group {c['group']}  weight {c['weight']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
