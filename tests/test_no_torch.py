"""The runtime must import without torch or ray: a bedside install has no [train] or [serve]
extra (the ray backend and ``pleura serve`` import ray only when used)."""

import subprocess
import sys


def test_runtime_imports_without_torch():
    code = (
        "import sys, importlib, pkgutil\n"
        "for top in ('stream', 'engines', 'ui'):\n"
        "    pkg = importlib.import_module(top)\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, top + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "heavy = ('torch', 'torchvision', 'train', 'ray')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    # Block torch outright so an import of it fails loudly rather than silently succeeding.
    blocker = (
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision', 'ray'):\n"
        "            raise ImportError('runtime imported ' + name)\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    out = subprocess.run([sys.executable, "-c", blocker + code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")
