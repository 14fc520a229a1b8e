"""Comparing two audit reports (report.json documents) as issue 15 defines "equal"."""

#: the fields that describe a run, not its results
RUN_FIELDS = ("created", "seconds", "engine", "workers", "retried_batches")


def same_report(a, b, where: str = "", skip: tuple[str, ...] = RUN_FIELDS) -> None:
    """Equal up to the fields in ``skip``: numbers within relative 1e-5 (absolute 1e-7), NaN
    (null) equal to NaN, everything else exactly."""
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            if k not in skip:
                same_report(a[k], b[k], f"{where}.{k}", skip)
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for k, (u, v) in enumerate(zip(a, b)):
            same_report(u, v, f"{where}[{k}]", skip)
    elif isinstance(a, float) and isinstance(b, float):
        assert abs(a - b) <= 1e-7 + 1e-5 * abs(b), (where, a, b)
    else:
        assert a == b, (where, a, b)
