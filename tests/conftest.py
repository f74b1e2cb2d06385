import sys
from pathlib import Path

# tests import their helpers (proxyutil) by name
sys.path.insert(0, str(Path(__file__).resolve().parent))
