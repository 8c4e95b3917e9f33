"""camvis-export: a trained job as a self-contained model bundle (weights, model.json, ONNX graph)."""

from __future__ import annotations

import sys

from camvis.cli import ERRORS, fail, new_parser

EPILOG = """examples:
  camvis-export outputs/demo/cat_fold1 models/cat_fold1
  camvis-export outputs/demo/cat_fold1 models/cat_fold1 --no-onnx     # without the optional onnx extra
  camvis-export outputs/demo/cat_fold1 models/cat_fold1_int8 --quantize int8   # int8 graph: faster on the CPU
  camvis-predict models/demo_cat --raw data/raw/demo data/raw/demo/images/1148_3_2020-*.png --runtime onnx
                                    # make demo's bundle (its best cat job) through its ONNX graph

The bundle: weights.pt (a state_dict that torch.load(..., weights_only=True) reads), model.json
(architecture, factors, patch size, preprocessing, normalization statistics, config and its
hash, camvis version, held-out scores) and model.onnx (opset 18, input x, output p_visible),
checked with onnxruntime against torch at export (an error above 1e-4). model.json records the
SHA-256 of both files and its own digest; camvis-predict verifies them before predicting. Run
from where the job's store is: its normalization statistics go into the bundle.
"""


def main(argv: list[str] | None = None) -> int:
    parser = new_parser("camvis-export", __doc__, EPILOG)
    parser.add_argument("job_dir", help="a job folder: best.pt and config.yaml")
    parser.add_argument("out", help="the bundle folder to write (an earlier bundle there is replaced)")
    parser.add_argument("--no-onnx", action="store_true", help="no ONNX graph (needs no onnx packages)")
    parser.add_argument("--quantize", choices=("int8",), default=None,
                        help="int8: quantize the ONNX graph statically (QDQ, calibrated on the job's training "
                             "patches, checked on its held-out view's): 3.3x (cat) and 4.3x (align) faster on 2 "
                             "AVX-512 VNNI cores, the median |log10 error| of held-out images moved by <= 0.007 "
                             "(benchmarks/results/quantize_cpu.json); --runtime torch still runs float32")
    parser.add_argument("--force", action="store_true",
                        help="accepted for scripts: OUT is replaced only when it is an earlier bundle or an empty "
                             "folder, never a job, experiment, store or raw folder or the job itself")
    args = parser.parse_args(argv)
    try:
        from camvis.job.export import export

        info = export(args.job_dir, args.out, onnx=not args.no_onnx, force=args.force, quantize=args.quantize)
    except ERRORS as e:  # OSError: one line for a path (camvis.io.os_error)
        return fail(e)
    onnx = info.get("onnx")
    graph = f", ONNX opset {onnx['opset']}" if onnx else ", no ONNX graph"
    graph += f" {onnx['quantization']['type']}" if onnx and onnx.get("quantization") else ""
    print(f"wrote {args.out}: model {info['model_id']} ({info['architecture_name']}, factors "
          f"{info['factors']}, patch {info['patch_size']}{graph})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
