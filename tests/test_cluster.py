"""onnxattr.cluster: the per-sample work on a Ray cluster (one local cluster of 2 CPUs shared by
the module), checked against the same work done in this process; the readers of every input
kind against onnxattr.inputs; the shards, resume, a killed worker, and failing samples.

Ray is a test requirement (``.ci/run`` installs ``.[test,ray]``): without it the cluster tests
fail, they do not skip.
"""
from __future__ import annotations

import functools
import io
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import onnxattr
from onnxattr import InputError, OptionError
from onnxattr.cluster import ImageOptions, run, shards
from onnxattr.cluster.sources import SampleReader, scan
from onnxattr.cluster.worker import FAULT_ENV
from onnxattr.inputs import load_batch, sample_indices
from oracles import oracle
from onnxattr.cli import main

MLP, _ = oracle("mlp")
N = 24


def run_batch(model: onnxattr.Model, samples: dict, indices: np.ndarray, calls: str) -> list[dict]:
    """A small per-batch function: each sample's logits and gradient map; every call appends
    the indices it computed to the file ``calls``."""
    with open(calls, "a") as f:
        f.write(" ".join(map(str, indices)) + "\n")
    x = samples["x"]
    logits = model(x)
    a = onnxattr.attribute(model, x, target=None, method="gradient")
    return [{"logits": logits[i], "gradient": a[i], "top": int(logits[i].argmax()),
             "meta": {"norm": float(np.linalg.norm(a[i])), "ok": True}} for i in range(len(x))]


def calls_of(path: pathlib.Path) -> list[int]:
    return [int(v) for line in path.read_text().split("\n") if line for v in line.split()]


def batch_fn(calls: pathlib.Path) -> functools.partial:
    return functools.partial(run_batch, calls=str(calls))


def by_index(records: list[dict]) -> dict[int, dict]:
    return {r["index"]: r for r in records}


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(N, 64)).astype(np.float32)
    x[5, 7] = np.nan  # fails on its own account
    return x


@pytest.fixture(scope="module")
def local(data: np.ndarray) -> dict[str, np.ndarray]:
    """The same work in this process, on the good samples."""
    model = onnxattr.load(MLP)
    good = np.isfinite(data).all(axis=1)
    return {"good": good, "logits": model(data[good]),
            "gradient": onnxattr.attribute(model, data[good], target=None, method="gradient")}


@pytest.fixture(scope="module")
def ray_cluster():
    import ray  # an ImportError here fails every cluster test: Ray is a test requirement

    # the workers cannot import this test module: send its functions by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def first_run(ray_cluster, data: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The data as two .npy shards, run on 2 workers in batches of 4."""
    d = tmp_path_factory.mktemp("cluster")
    (d / "data").mkdir()
    np.save(d / "data" / "a.npy", data[:10])
    np.save(d / "data" / "b.npy", data[10:])
    bar = io.StringIO()
    records, info = run(MLP, d / "data", d / "out", batch_fn(d / "calls"), list, workers=2, batch_size=4, progress=bar)
    return dict(dir=d, records=records, info=info, calls=calls_of(d / "calls"), bar=bar.getvalue())


# ---- on the cluster ---------------------------------------------------------------------------
def test_cluster_run_equals_local(first_run: dict, local: dict) -> None:
    records, info = first_run["records"], first_run["info"]
    assert [r["index"] for r in records] == list(range(N))  # every sample once, in index order
    assert [r["index"] for r in records if "failed" in r] == [5]
    assert "NaN" in records[5]["failed"]
    ok = [r for r in records if "failed" not in r]
    np.testing.assert_allclose(np.stack([r["logits"] for r in ok]), local["logits"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.stack([r["gradient"] for r in ok]), local["gradient"], rtol=1e-5, atol=1e-7)
    assert all(r["top"] == int(r["logits"].argmax()) and r["meta"]["ok"] is True for r in ok)
    # the samples ran in worker processes, at least two of them, each computed once
    workers = {r["pid"] for r in records} - {os.getpid()}
    assert len(workers) >= 2 and os.getpid() not in info["pids"]
    assert sorted(first_run["calls"]) == [i for i in range(N) if i != 5]
    assert info["engine"] == "ray" and info["workers"] == 2 and info["retried_batches"] == 0
    assert (info["computed"], info["reused"], info["failed"]) == (N, 0, 1)
    assert info["startup_seconds"] >= 0 and info["seconds"] > 0
    assert f"{N}/{N} samples" in first_run["bar"] and "samples/s" in first_run["bar"]


def test_shards_hold_index_and_worker_pid(first_run: dict) -> None:
    import pyarrow.parquet as pq

    files = sorted((first_run["dir"] / "out" / "shards").glob("*.parquet"))
    assert len(files) == N // 4  # one shard per batch
    tables = [pq.read_table(f) for f in files]
    assert sorted(i for t in tables for i in t.column("index").to_pylist()) == list(range(N))
    pids = {p for t in tables for p in t.column("pid").to_pylist()}
    assert pids == set(first_run["info"]["pids"])


DRIVER = """
import functools, sys, time
from onnxattr.cluster import run

def run_batch(model, samples, indices, calls):
    with open(calls, "a") as f:
        f.write(" ".join(map(str, indices)) + "\\n")
    time.sleep(0.3)
    x = samples["x"]
    return [{"logits": l} for l in model(x)]

run(sys.argv[1], sys.argv[2], sys.argv[3], functools.partial(run_batch, calls=sys.argv[4]), len,
    address=sys.argv[5], workers=2, batch_size=2, progress=False)
"""


def test_a_killed_driver_resumes_computing_only_the_missing_samples(ray_cluster, data: np.ndarray, local: dict,
                                                                    tmp_path: pathlib.Path) -> None:
    """A driver (its own process, on the same cluster) is killed once two batches are written;
    the resumed run computes exactly the samples without a shard, and nothing else."""
    import pyarrow.parquet as pq

    np.save(tmp_path / "data.npy", data)
    out, before = tmp_path / "out", tmp_path / "calls_before"
    address = ray_cluster.get_runtime_context().gcs_address
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, MLP, str(tmp_path / "data.npy"), str(out), str(before),
                               address], env=_env())
    try:
        while len(list((out / "shards").glob("*.parquet"))) < 2:
            assert driver.poll() is None, "the driver ended before it could be killed"
            time.sleep(0.05)
    finally:
        driver.kill()
        driver.wait()
    kept = {i for f in (out / "shards").glob("*.parquet") for i in pq.read_table(f).column("index").to_pylist()}
    assert 0 < len(kept) < N
    calls = tmp_path / "calls"
    records, info = run(MLP, tmp_path / "data.npy", out, batch_fn(calls), list, workers=2, batch_size=4,
                        resume=True, progress=False)
    assert sorted(calls_of(calls)) == [i for i in range(N) if i not in kept and i != 5]
    assert (info["computed"], info["reused"]) == (N - len(kept), len(kept))
    assert [r["index"] for r in records] == list(range(N))
    ok = [r for r in records if "failed" not in r]
    np.testing.assert_allclose(np.stack([r["logits"] for r in ok]), local["logits"], rtol=1e-5, atol=1e-7)
    with pytest.raises(OptionError, match="another run"):  # other settings: the shards do not fit
        run(MLP, tmp_path / "data.npy", out, batch_fn(calls), list, resume=True, seed=1, sample=5)


def _env() -> dict[str, str]:
    """The environment of a child python that imports this checkout's onnxattr."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(pathlib.Path(onnxattr.__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))


# ---- the audit on the cluster -----------------------------------------------------------------
CNN, CNN_DATA = oracle("cnn_bn")
AUDIT = dict(methods=("gradient", "smoothgrad"), options={"smoothgrad": {"samples": 4}}, sample=0, curve_steps=4,
             n_subsets=4, n_sizes=2, heatmaps=3, progress=False)
#: what may differ between two runs of the same audit
RUN_FIELDS = ("created", "seconds", "engine", "workers", "retried_batches")


def audit_data() -> np.ndarray:
    """12 images of the cnn_bn oracle (its 4, perturbed), sample 2 with a NaN."""
    x = np.concatenate([CNN_DATA["input"] + 0.1 * k for k in range(3)]).astype(np.float32)
    x[2, 1, 3, 3] = np.nan
    return x


@pytest.fixture(scope="module")
def local_audit() -> dict:
    """The local audit, in batches of 5 (the cluster runs batches of 4)."""
    return onnxattr.audit(CNN, audit_data(), batch_size=5, **AUDIT).to_json()


def same_report(a: dict, b: dict, where: str = "") -> None:
    """Equal up to the run's own fields: numbers within relative 1e-5 (absolute 1e-7), NaN (null) equal."""
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            if k not in RUN_FIELDS:
                same_report(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for k, (u, v) in enumerate(zip(a, b)):
            same_report(u, v, f"{where}[{k}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert abs(a - b) <= 1e-7 + 1e-5 * abs(b), (where, a, b)
    else:
        assert a == b, (where, a, b)


def shard_rows(out: pathlib.Path) -> list[dict]:
    import pyarrow.parquet as pq

    return [r for f in sorted((out / "shards").glob("*.parquet"))
            for r in pq.read_table(f, columns=["index", "pid", "attempt"]).to_pylist()]


def test_the_audit_on_the_cluster_equals_the_local_audit(ray_cluster, local_audit: dict, tmp_path: pathlib.Path) -> None:
    report = onnxattr.audit(CNN, audit_data(), engine="ray", workers=2, batch_size=4, out_dir=tmp_path, **AUDIT)
    doc = report.to_json()
    same_report(local_audit, doc)
    assert (doc["engine"], doc["workers"], doc["retried_batches"]) == ("ray", 2, 0)
    assert local_audit["engine"] == "local"
    for d in (doc, local_audit):  # one failing sample: listed, left out, the audit goes on
        assert [f["index"] for f in d["failed"]] == [2] and "NaN" in d["failed"][0]["reason"]
        assert d["data"]["sample"] == [i for i in range(12) if i != 2]
    rows = shard_rows(tmp_path)
    assert sorted(r["index"] for r in rows) == list(range(12))
    assert len({r["pid"] for r in rows} - {os.getpid()}) >= 2
    assert json.loads((tmp_path / "report.json").read_text())["engine"] == "ray"


def test_a_killed_worker_loses_nothing_and_counts_nothing_twice(ray_cluster, local_audit: dict, tmp_path: pathlib.Path,
                                                               monkeypatch) -> None:
    monkeypatch.setenv(FAULT_ENV, "2")  # the run's second batch kills its worker, once
    doc = onnxattr.audit(CNN, audit_data(), engine="ray", workers=2, batch_size=4, out_dir=tmp_path, **AUDIT).to_json()
    same_report(local_audit, doc)  # every sample with the local values, none twice
    assert doc["retried_batches"] >= 1
    rows = shard_rows(tmp_path)
    assert sorted(r["index"] for r in rows) == list(range(12)) and max(r["attempt"] for r in rows) == 2


def test_every_sample_failing_is_an_error(ray_cluster, tmp_path: pathlib.Path) -> None:
    bad = np.full((4, 64), np.nan, dtype=np.float32)
    with pytest.raises(InputError, match="every one of the 4 samples failed; sample 0: .*NaN"):
        run(MLP, bad, tmp_path / "out", batch_fn(tmp_path / "calls"), list, workers=1, progress=False)


def test_more_workers_than_the_cluster_holds(ray_cluster, data: np.ndarray, tmp_path: pathlib.Path) -> None:
    with pytest.raises(OptionError, match="workers=3: the cluster has 2 CPUs"):
        run(MLP, data, tmp_path / "out", batch_fn(tmp_path / "calls"), list, workers=3, progress=False)


# ---- without a cluster ------------------------------------------------------------------------
def test_without_ray_it_says_how_to_install_it(data: np.ndarray, tmp_path: pathlib.Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as where it is missing
    with pytest.raises(OptionError, match=r"pip install 'onnxattr\[ray\]'"):
        run(MLP, data, tmp_path / "out", batch_fn(tmp_path / "calls"), list)


def test_the_cli_says_how_to_install_ray(tmp_path: pathlib.Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["audit", str(MLP), "--data", str(tmp_path), "--ray", "--out", str(tmp_path / "out")]) == 2
    assert "pip install 'onnxattr[ray]'" in capsys.readouterr().err
    assert main(["audit", str(MLP), "--data", str(tmp_path), "--resume"]) == 2
    assert "add --ray" in capsys.readouterr().err


def test_the_library_does_not_import_ray() -> None:
    code = "import sys, onnxattr, onnxattr.cluster; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env=_env())


def test_samples_are_numbered_across_array_files_and_drawn_as_the_audit_draws(data: np.ndarray,
                                                                              tmp_path: pathlib.Path) -> None:
    np.save(tmp_path / "a.npy", data[:10].astype(np.float64))
    np.savez(tmp_path / "b.npz", x=data[10:20], other=np.zeros(3))
    np.save(tmp_path / "c.npy", data[20:])
    parts = scan(tmp_path)
    assert [(p.kind, p.start, p.count) for p in parts] == [("npy", 0, 10), ("npz", 10, 10), ("npy", 20, 4)]
    got = SampleReader(parts).read([23, 0, 12, 9])
    np.testing.assert_array_equal(np.stack(got), data[[23, 0, 12, 9]])
    assert all(g.dtype == np.float32 for g in got)
    clean = np.nan_to_num(data)
    report = onnxattr.audit(MLP, clean, methods=("gradient",), analyses=("alignment",), sample=5, seed=3,
                            heatmaps=0, progress=False)
    assert report.data["sample"] == sample_indices(N, 5, 3).tolist()


def test_image_files_read_as_the_local_engine_reads_them(tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(1)
    paths = []
    for k in range(3):
        p = tmp_path / f"img{k}.png"
        Image.fromarray(rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    (tmp_path / "img9.png").write_bytes(b"not a png")
    shape, mean, std = (None, 3, 8, 8), (0.5, 0.4, 0.3), (0.2, 0.2, 0.2)
    images = ImageOptions.for_input(shape, mean=mean, std=std)
    got = SampleReader(scan(tmp_path), images).read([2, 0, 3])
    want = load_batch([str(p) for p in paths], shape, mean=mean, std=std)
    np.testing.assert_array_equal(got[0], want[2])
    np.testing.assert_array_equal(got[1], want[0])
    assert isinstance(got[2], str) and "img9.png" in got[2]  # this sample fails, the others read


def test_parquet_array_and_image_columns(tmp_path: pathlib.Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = np.random.default_rng(2).normal(size=(7, 2, 3)).astype(np.float32)
    want = [1, 6, 2, 5]

    def check(table, name: str, **kw) -> None:
        pq.write_table(table, tmp_path / name, row_group_size=3)  # samples cross row groups
        got = SampleReader(scan(tmp_path / name, kw.get("column")), column=kw.get("column")).read(want)
        np.testing.assert_array_equal(np.stack(got), x[want])

    check(pa.table({"x": [s.tolist() for s in x]}), "lists.parquet")
    check(pa.table({"input": pa.FixedShapeTensorArray.from_numpy_ndarray(x), "label": list(range(7))}), "tensor.parquet")
    npy = []
    for s in x:
        buf = io.BytesIO()
        np.save(buf, s)
        npy.append(buf.getvalue())
    check(pa.table({"blob": npy, "label": list(range(7))}), "npy.parquet", column="blob")
    # a Ray Data tensor column as plain pyarrow reads it: flat lists, the shape in the metadata
    meta = {b"ARROW:extension:name": b"ray.data.arrow_tensor_v2", b"ARROW:extension:metadata": b"[2, 3]"}
    field = pa.field("data", pa.large_list(pa.float32()), metadata=meta)
    check(pa.Table.from_arrays([pa.array([s.ravel().tolist() for s in x], pa.large_list(pa.float32()))],
                               schema=pa.schema([field])), "ray.parquet")
    pngs = []
    for s in (x * 40 + 128).clip(0, 255).astype(np.uint8):
        buf = io.BytesIO()
        Image.fromarray(np.repeat(s[..., None], 3, axis=-1)).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    pq.write_table(pa.table({"image": pngs + [b"broken"]}), tmp_path / "png.parquet")
    images = ImageOptions.for_input((None, 3, 2, 3))
    got = SampleReader(scan(tmp_path / "png.parquet"), images).read([4, 7])
    want_img = load_batch([str(_png(tmp_path, pngs[4]))], (None, 3, 2, 3))[0]
    np.testing.assert_array_equal(got[0], want_img)
    assert "png.parquet row 7 column 'image'" in got[1]
    with pytest.raises(OptionError, match="name the one that holds the samples"):
        scan(tmp_path / "npy.parquet")


def _png(d: pathlib.Path, data: bytes) -> pathlib.Path:
    p = d / "one.png"
    p.write_bytes(data)
    return p


def test_records_read_back_from_shards_as_written(tmp_path: pathlib.Path) -> None:
    rows = [
        {"index": 3, "pid": 1, "attempt": 1, "map": np.arange(6, dtype=np.float32).reshape(2, 3),
         "auc": float("nan"), "curve": [0.5, 0.25], "per": {"a": np.int64(2), "b": np.ones(2, np.float64)},
         "none": None},
        {"index": 1, "pid": 2, "attempt": 2, "failed": "sample 1: bad"},
    ]
    shards.start(tmp_path, {"run": 1}, resume=False)
    shards.write(tmp_path, "part-000000", rows)
    back = shards.read(tmp_path)
    assert back[1] == {"index": 1, "pid": 2, "attempt": 2, "failed": "sample 1: bad"}
    r = back[0]
    assert sorted(r) == ["attempt", "auc", "curve", "index", "map", "per", "pid"]  # None reads as missing
    assert r["map"].dtype == np.float32 and r["map"].tolist() == rows[0]["map"].tolist()
    assert np.isnan(r["auc"]) and r["curve"] == [0.5, 0.25] and r["per"]["a"] == 2
    np.testing.assert_array_equal(r["per"]["b"], np.ones(2))
    with pytest.raises(OptionError, match="'blob' holds bytes"):
        shards.write(tmp_path, "part-000001", [{"index": 0, "blob": b"x"}])


def test_a_fresh_run_clears_old_shards_and_a_resumed_one_checks_them(tmp_path: pathlib.Path) -> None:
    shards.start(tmp_path, {"seed": 0}, resume=False)
    shards.write(tmp_path, "part-000000", [{"index": 0, "pid": 1, "attempt": 1, "v": 1.0}])
    shards.start(tmp_path, {"seed": 0}, resume=True)
    assert len(shards.read(tmp_path)) == 1
    with pytest.raises(OptionError, match=r"seed was 0, now 1"):
        shards.start(tmp_path, {"seed": 1}, resume=True)
    shards.start(tmp_path, {"seed": 1}, resume=False)
    assert shards.read(tmp_path) == []
