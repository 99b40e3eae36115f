import sys
from pathlib import Path

# The server tests' helpers (trained artifacts, in-process and subprocess servers).
SERVER_TESTS = Path(__file__).resolve().parents[2] / "server" / "tests"
if str(SERVER_TESTS) not in sys.path:
    sys.path.insert(0, str(SERVER_TESTS))
