import sys
from pathlib import Path

# Let the tests import recsys_trainer from the source tree when it is not pip-installed.
TRAINER_DIR = Path(__file__).resolve().parents[1]
if str(TRAINER_DIR) not in sys.path:
    sys.path.insert(0, str(TRAINER_DIR))
