"""Every MLflow tag, metric and artifact key this project writes, defined once.

Users' filter strings and benchmarks depend on these exact names (issue 2's trial contract);
change one only with a schema bump and a patch in `tracking.trial_from_run`.
"""

SCHEMA = "1"

# Tags, set by the loop through tracking.py.
PREFIX = "autoresearch."
SCHEMA_VERSION = "autoresearch.schema"
ENVIRONMENT = "autoresearch.environment"
CAMPAIGN = "autoresearch.campaign"
PROFILE = "autoresearch.profile"
DIRECTION = "autoresearch.direction"  # experiment tag: minimize or maximize
TRIAL = "autoresearch.trial"
SPECIALIST = "autoresearch.specialist"
HYPOTHESIS = "autoresearch.hypothesis"
EXPECTED_DELTA = "autoresearch.expected_delta"
NOTES = "autoresearch.notes"
LABEL = "autoresearch.label"
DECISION = "autoresearch.decision"
PARENT = "autoresearch.lineage.parent"
LINEAGE_PATH = "autoresearch.lineage.path"
DIFF_SHA = "autoresearch.diff.sha256"
EXCERPT = "autoresearch.excerpt"
PID = "autoresearch.pid"
# MLflow's own keys we set on purpose: the UI's run tree becomes the lineage tree.
MLFLOW_PARENT = "mlflow.parentRunId"
MLFLOW_NOTE = "mlflow.note.content"

# Metrics.
SCORE = "score"
FAILURE_CODE = "failure_code"
DELTA_VS_BEST = "delta_vs_best"
DIFF_LINES = "diff_lines"
HARNESS_SECONDS = "harness_seconds"
TRIAL_SECONDS = "trial_seconds"
# LLM specialists' usage, per trial (a proposal's metrics).
LLM_INPUT_TOKENS = "llm_input_tokens"
LLM_OUTPUT_TOKENS = "llm_output_tokens"
LLM_CACHED_INPUT_TOKENS = "llm_cached_input_tokens"
LLM_COST_USD = "llm_cost_usd"
LLM_ATTEMPTS = "llm_attempts"
LLM_SECONDS = "llm_seconds"
# Keys only the harness may write; a recipe that writes one is caught (tracking.find_tampering).
HARNESS_METRICS = (SCORE, FAILURE_CODE, DELTA_VS_BEST)

# Artifacts, relative to the run's artifact root.
ARTIFACT_DIR = "trial"
PATCH = "trial/patch.diff"
PATCH_PREVIEW = "trial/patch.diff.txt"
RECIPE_DIR = "trial/recipe"
EVALUATION = "trial/evaluation.json"
LOGS_DIR = "trial/logs"
CONTEXT = "trial/context.md"

# Lineage paths hold ~240 run ids before MLflow's 8,000-char tag cap; keep the newest.
MAX_TAG_CHARS = 8000
