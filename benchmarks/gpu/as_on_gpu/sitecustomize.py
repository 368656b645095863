"""Simulate the GPU machine's packages here: with this folder on PYTHONPATH, Python starts with every installed
distribution hidden except those named in $CL_ASR_AS_ON_GPU (comma-separated; benchmarks/gpu/pack.py's
simulated_allowed: the machine's own packages plus the carried wheels). A module counts as hidden when the file
its finder found belongs to a hidden distribution (its RECORD), so namespace packages shared by several
distributions (google, opentelemetry) are told apart module by module. tests/test_gpu_script.py runs the micro
profile so, and a missing wheel fails there, not on a lent GPU. Versions are not simulated: only presence."""
import os
import re
import sys
from importlib import metadata


def _install():
    allowed = {re.sub(r"[-_.]+", "-", n).lower() for n in os.environ.get("CL_ASR_AS_ON_GPU", "").split(",") if n}
    hidden_files = set()
    for dist in metadata.distributions():
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower()
        if name in allowed or not dist.files:
            continue
        hidden_files.update(os.path.realpath(dist.locate_file(f)) for f in dist.files
                            if str(f).endswith((".py", ".so", ".pyc")) or "__init__" in str(f))

    class Hide:
        """Wraps a meta-path finder: what it finds in a hidden distribution is reported as not found."""

        def __init__(self, inner):
            self.inner = inner

        def find_spec(self, name, path=None, target=None):
            spec = self.inner.find_spec(name, path, target)
            origin = getattr(spec, "origin", None)
            if spec is not None and origin and os.path.realpath(origin) in hidden_files:
                return None
            return spec

        def __getattr__(self, attr):
            return getattr(self.inner, attr)

    sys.meta_path[:] = [Hide(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]


if os.environ.get("CL_ASR_AS_ON_GPU"):
    _install()
