import sys

import pytest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def _xdist_group_suffix(item) -> str:
    names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")})
    return "@" + "_".join(names) if names else ""





@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Keep ``--dist loadgroup`` working on pytest 9: pytest-xdist (3.8) tags a grouped test by
    assigning ``item._nodeid``, which pytest 9 no longer reads (the id lives in ``item._id``), so
    every group was silently split over the workers and each built its module's export fixtures
    again.  Where xdist's tag did not take, set it on the id pytest 9 uses."""
    if not config.getoption("loadgroup", default=False):
        return
    for item in items:
        suffix = _xdist_group_suffix(item)
        if not suffix or item.nodeid.endswith(suffix) or not hasattr(item, "_id"):
            continue
        from _pytest.nodeid import coerce_node_id

        item._id = coerce_node_id(item.nodeid + suffix)
