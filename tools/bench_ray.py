"""The audit engines' benchmark (BENCHMARKS.md, "The audit on a Ray cluster"): the audit of models/torch_resnet_bn_op17.onnx on 256 shapes images,
local engine vs a local Ray cluster (Ray start-up timed apart). Run from the repository root:
    PYTHONPATH=$PWD python tools/bench_ray.py N MODE   (MODE: local, local1, ray)
local1 = local with one thread (ONNXATTR_NUM_THREADS/OMP/OPENBLAS=1, set before numpy loads)."""
import json, os, sys, time
N, MODE = int(sys.argv[1]), sys.argv[2]
if MODE == "local1":
    os.environ.update(ONNXATTR_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
import numpy as np
sys.path.insert(0, "tools")
from shapes_data import make_shapes
import onnxattr

x, y, _ = make_shapes(N, seed=0)
ref = np.load("models/torch_resnet_bn_op17.npz")
# the bundled inputs' scale (the zoo normalised them): map shapes images onto it per channel
m, s = ref["input"].mean(axis=(0, 2, 3), keepdims=True), ref["input"].std(axis=(0, 2, 3), keepdims=True)
x = ((x - x.mean(axis=(0, 2, 3), keepdims=True)) / x.std(axis=(0, 2, 3), keepdims=True) * s + m).astype(np.float32)
os.makedirs("/tmp/rayint_bench", exist_ok=True)
np.save("/tmp/rayint_bench/data.npy", x)
kw = dict(methods=("gradient", "lrp.epsilon_plus_flat"), sample=0, progress=False, batch_size=16)
out = {"n": N, "mode": MODE, "load": os.getloadavg()[0]}
if MODE == "ray":
    import ray
    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    out["startup"] = time.perf_counter() - t
    kw.update(engine="ray", workers=2, out_dir="/tmp/rayint_bench/out")
t = time.perf_counter()
r = onnxattr.audit("models/torch_resnet_bn_op17.onnx", "/tmp/rayint_bench/data.npy", **kw)
out["seconds"] = time.perf_counter() - t
out["accuracy"] = float(np.mean(np.array(r.data["predicted"]) == y[r.data["sample"]]))
out["per_method"] = {k: round(v.seconds, 2) for k, v in r.methods.items()}
out["load_after"] = os.getloadavg()[0]
json.dump(r.to_json(), open(f"/tmp/rayint_bench/{MODE}_{N}.json", "w"))
print(json.dumps(out))
