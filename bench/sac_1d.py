"""SAC on ML-Agents' 1-D test environment, Palaestra against ML-Agents 1.1.0 measured side by side:
bench/mlagents_1d.py for its two SAC variants (discrete and continuous actions).

Usage: python bench/sac_1d.py [--steps 5000] [--repeats 3] [any other flag of bench/mlagents_1d.py]
"""

from __future__ import annotations

import sys

from mlagents_1d import main

if __name__ == "__main__":
    # --steps is this script's older name for --sac-steps
    args = [a.replace("--steps", "--sac-steps", 1) if a.split("=")[0] == "--steps" else a for a in sys.argv[1:]]
    main(["--variants", "sac-discrete", "sac-continuous", *args])
