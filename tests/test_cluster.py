"""onnxattr.cluster: the audit on a Ray cluster (one local cluster of 2 CPUs shared by the module)
checked against the local audit, with a failing sample, a killed worker and a killed driver
resumed; the readers of every input kind against onnxattr.inputs; the shards and the manifest.

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
from reports import same_report
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


def batch_fn(calls: pathlib.Path) -> functools.partial:
    return functools.partial(run_batch, calls=str(calls))


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(N, 64)).astype(np.float32)
    x[5, 7] = np.nan  # fails on its own account
    return x


@pytest.fixture(scope="module")
def ray_cluster():
    import ray  # an ImportError here fails every cluster test: Ray is a test requirement

    # the workers cannot import this test module: send its functions by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def _env() -> dict[str, str]:
    """The environment of a child python that imports this checkout's onnxattr."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(pathlib.Path(onnxattr.__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))


# ---- the audit on the cluster -----------------------------------------------------------------
CNN, CNN_DATA = oracle("cnn_bn")
AUDIT = dict(methods=("smoothgrad",), options={"smoothgrad": {"samples": 4}}, sample=0, curve_steps=4,
             n_subsets=4, n_sizes=2, heatmaps=3, progress=False)


def audit_data() -> np.ndarray:
    """12 images of the cnn_bn oracle (its 4, perturbed), sample 2 with a NaN."""
    x = np.concatenate([CNN_DATA["input"] + 0.1 * k for k in range(3)]).astype(np.float32)
    x[2, 1, 3, 3] = np.nan
    return x


@pytest.fixture(scope="module")
def local_audit() -> dict:
    """The local audit, in batches of 5 (the cluster runs batches of 4)."""
    return onnxattr.audit(CNN, audit_data(), batch_size=5, **AUDIT).to_json()


def shard_rows(out: pathlib.Path) -> list[dict]:
    import pyarrow.parquet as pq

    return [r for f in sorted((out / "shards").glob("*.parquet"))
            for r in pq.read_table(f, columns=["index", "pid", "attempt"]).to_pylist()]


def test_the_audit_on_the_cluster_equals_the_local_audit(ray_cluster, local_audit: dict, tmp_path: pathlib.Path) -> None:
    import pyarrow.parquet as pq

    bar = io.StringIO()
    report = onnxattr.audit(CNN, audit_data(), engine="ray", workers=2, batch_size=2, out_dir=tmp_path,
                            **dict(AUDIT, progress=bar))
    doc = report.to_json()
    same_report(local_audit, doc)
    assert (doc["engine"], doc["workers"], doc["retried_batches"]) == ("ray", 2, 0)
    assert local_audit["engine"] == "local"
    for d in (doc, local_audit):  # one failing sample: listed, left out, the audit goes on
        assert [f["index"] for f in d["failed"]] == [2] and "NaN" in d["failed"][0]["reason"]
        assert d["data"]["sample"] == [i for i in range(12) if i != 2]
    files = sorted((tmp_path / "shards").glob("*.parquet"))
    assert len(files) == 6  # one shard per batch, with the index and the worker's pid of every sample
    assert all({"index", "pid", "attempt", "methods"} <= set(pq.read_schema(f).names) for f in files)
    rows = shard_rows(tmp_path)
    assert sorted(r["index"] for r in rows) == list(range(12))
    assert len({r["pid"] for r in rows} - {os.getpid()}) >= 2
    assert json.loads((tmp_path / "report.json").read_text())["engine"] == "ray"
    assert "12/12 samples" in bar.getvalue() and "samples/s" in bar.getvalue()


def test_a_killed_worker_loses_nothing_and_counts_nothing_twice(ray_cluster, local_audit: dict, tmp_path: pathlib.Path,
                                                               monkeypatch) -> None:
    monkeypatch.setenv(FAULT_ENV, "2")  # the run's second batch kills its worker, once
    doc = onnxattr.audit(CNN, audit_data(), engine="ray", workers=2, batch_size=4, out_dir=tmp_path, **AUDIT).to_json()
    same_report(local_audit, doc)  # every sample with the local values, none twice
    assert doc["retried_batches"] >= 1
    rows = shard_rows(tmp_path)
    assert sorted(r["index"] for r in rows) == list(range(12)) and max(r["attempt"] for r in rows) == 2


def test_a_killed_driver_resumes_computing_only_the_missing_samples(ray_cluster, local_audit: dict,
                                                                    tmp_path: pathlib.Path) -> None:
    """The CLI's driver (its own process, on the same cluster) is killed once two batches are
    written; the resumed audit computes exactly the samples without a shard, and its report
    equals the local one."""
    np.save(tmp_path / "data.npy", audit_data())
    out = tmp_path / "out"
    address = ray_cluster.get_runtime_context().gcs_address
    argv = ["audit", str(CNN), "--data", str(tmp_path / "data.npy"), "--method", "smoothgrad",
            "-O", "smoothgrad:samples=4", "--sample", "0", "--curve-steps", "4", "--n-subsets", "4", "--n-sizes", "2",
            "--heatmaps", "3", "--batch-size", "1", "--ray", address, "--workers", "2", "--out", str(out), "-q"]
    driver = subprocess.Popen([sys.executable, "-m", "onnxattr.cli", *argv], env=_env())
    try:
        while len(list((out / "shards").glob("*.parquet"))) < 2:
            assert driver.poll() is None, "the driver ended before it could be killed"
            time.sleep(0.05)
    finally:
        driver.kill()
        driver.wait()
    old = {f: f.stat().st_mtime_ns for f in (out / "shards").glob("*.parquet")}
    kept = {r["index"] for r in shard_rows(out)}
    assert 0 < len(kept) < 12 and not (out / "report.json").exists()
    doc = onnxattr.audit(CNN, tmp_path / "data.npy", engine="ray", workers=2, batch_size=4, out_dir=out, resume=True,
                         **AUDIT).to_json()
    assert {f: f.stat().st_mtime_ns for f in old} == old  # the old shards are kept as they were
    import pyarrow.parquet as pq

    new = [i for f in sorted(set((out / "shards").glob("*.parquet")) - set(old))
           for i in pq.read_table(f, columns=["index"]).column("index").to_pylist()]
    assert sorted(new) == sorted(set(range(12)) - kept)  # computed now: exactly the missing ones
    doc["data"]["sources"] = local_audit["data"]["sources"]
    same_report(local_audit, doc)
    with pytest.raises(OptionError, match="another run"):  # another seed: the shards do not fit
        onnxattr.audit(CNN, tmp_path / "data.npy", engine="ray", out_dir=out, resume=True, **dict(AUDIT, seed=1))


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
