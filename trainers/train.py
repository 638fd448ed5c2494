"""``accelerate launch trainers/train.py --recipe tiny-cpu --model ... --data ... --output-dir ...``.

Also runnable as ``accelerate launch -m m3el_hf.trainers.train`` and as ``m3el-hf train``.
"""

import sys

from m3el_hf.training.loop import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
