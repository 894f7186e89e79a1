# %% [markdown]
# # Explore a pipeline run
# `python notebooks/explore_run.py artifacts/default` — reads the run's files, prints its metrics
# and the ten highest-scoring test images.

# %%
import json
import sys
from pathlib import Path

import pandas as pd

run = Path(sys.argv[1] if len(sys.argv) > 1 else "artifacts/default")
metrics = json.loads((run / "evaluate" / "metrics.json").read_text())
print(json.dumps(metrics, indent=2))

# %%
scores = pd.read_csv(run / "evaluate" / "scores.csv")
print(scores.groupby("defect_type")["score"].describe())
print(scores.sort_values("score", ascending=False).head(10)[["path", "defect_type", "score"]])
