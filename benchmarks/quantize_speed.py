"""How long int4mm.quantize takes for a 70B-parameter model, layer by layer.

Times the GPU quantizer (round-to-nearest, group 128, dense and 16:32) on
the linear-layer shapes of one Llama-2-70B decoder layer (hidden 8192,
intermediate 28672, 8 KV heads of 128), one weight at a time as a model
loader would, and multiplies by the 80 layers.  Weights are random fp16 /
bf16 (the quantizer's time does not depend on the values).  GPU time from
CUDA events around each call (median of 3, after a warm-up call); the call
includes its Inf/NaN pre-check and that check's stream synchronization.

    python benchmarks/quantize_speed.py [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

LAYER_SHAPES = {  # name: (K = in_features, N = out_features)
    "q_proj": (8192, 8192),
    "k_proj": (8192, 1024),
    "v_proj": (8192, 1024),
    "o_proj": (8192, 8192),
    "gate_proj": (8192, 28672),
    "up_proj": (8192, 28672),
    "down_proj": (28672, 8192),
}
LAYERS = 80


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    import int4mm

    if not torch.cuda.is_available() or not int4mm.is_available():
        print("needs a GPU that int4mm supports", file=sys.stderr)
        return 2
    dev = torch.device("cuda", 0)
    results = {"gpu": torch.cuda.get_device_name(dev), "int4mm": int4mm.__version__,
               "layers": LAYERS, "runs": []}
    for dtype in (torch.float16, torch.bfloat16):
        for sparse in (False, True):
            per_layer_ms = 0.0
            params = 0
            for name, (K, N) in LAYER_SHAPES.items():
                w = (torch.randn(N, K, device=dev, dtype=dtype) * 0.02).t()  # linear.weight.t()
                times = []
                for i in range(args.repeats + 1):
                    start = torch.cuda.Event(enable_timing=True)
                    end = torch.cuda.Event(enable_timing=True)
                    start.record()
                    q = int4mm.quantize(w, group_size=128, sparse=sparse)
                    end.record()
                    end.synchronize()
                    if i:
                        times.append(start.elapsed_time(end))
                    del q
                ms = statistics.median(times)
                per_layer_ms += ms
                params += K * N
                results["runs"].append({"dtype": str(dtype).removeprefix("torch."),
                                        "sparse": sparse, "layer": name, "K": K, "N": N,
                                        "ms": ms, "samples_ms": times,
                                        "gb_per_s": 2 * K * N / ms / 1e6})
                del w
                torch.cuda.empty_cache()
            total_s = per_layer_ms * LAYERS / 1000
            line = (f"{str(dtype).removeprefix('torch.'):8s} {'16:32' if sparse else 'dense'}: "
                    f"one layer ({params / 1e6:.0f} M weights) {per_layer_ms:.1f} ms; "
                    f"{LAYERS} layers {total_s:.2f} s")
            results.setdefault("summary", []).append(line)
            print(line)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
