import importlib.util
import sys
from pathlib import Path

# Let the tests import recsys_server (and recsys_trainer, which trains their artifacts) from the
# source tree when they are not pip-installed.
ROOT = Path(__file__).resolve().parents[2]
for package, source in (("recsys_server", ROOT / "server"), ("recsys_trainer", ROOT / "trainer")):
    if importlib.util.find_spec(package) is None and str(source) not in sys.path:
        sys.path.insert(0, str(source))
